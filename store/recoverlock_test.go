package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// The lock manager twin grants a recovery request over a dead node's
// orphan and ahead of the plain requests queued behind it, also as a try;
// the plain ones wait until the orphan is released and the recovery grant
// given back.
func TestMemLocksRecoveryPassesOrphanAndQueue(t *testing.T) {
	lm := NewMemLocks()
	ctx := context.Background()
	dead, coord, other := lm.Node("dead"), lm.Node("coord"), lm.Node("other")
	if _, err := dead.Lock(ctx, "r", Exclusive, LockOptions{}); err != nil {
		t.Fatal(err)
	}
	lm.Kill("dead")
	plain := make(chan Lock, 2)
	for _, n := range []Locker{coord, other} {
		go func() {
			l, err := n.Lock(ctx, "r", Exclusive, LockOptions{})
			if err != nil {
				t.Error(err)
			}
			plain <- l
		}()
	}
	testutil.WaitFor(t, 5*time.Second, "two plain requests queued", func() bool { return len(lm.Waiting("r")) == 2 })
	rl, err := coord.Lock(ctx, "r", Exclusive, LockOptions{Try: true, Recovery: true})
	if err != nil {
		t.Fatalf("recovery try behind queued plain requests: %v", err)
	}
	if _, err := coord.Lock(ctx, "r", Exclusive, LockOptions{Try: true, Recovery: true}); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("second recovery grant beside the first: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	second := make(chan error, 1)
	go func() {
		l, err := other.Lock(rctx, "r", Exclusive, LockOptions{Recovery: true})
		if err == nil {
			err = l.Release()
		}
		second <- err
	}()
	testutil.WaitFor(t, 5*time.Second, "recovery request queued ahead of the plain ones", func() bool {
		w := lm.Waiting("r")
		return len(w) == 3 && w[0] == "other:EX:recovery"
	})
	if err := rl.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("queued recovery request: %v", err)
	}
	select {
	case l := <-plain:
		t.Fatalf("plain request granted over the orphan: %v", l)
	default:
	}
	lm.ReleaseDead("dead")
	for range 2 {
		select {
		case l := <-plain:
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("plain requests not granted after the orphan was released")
		}
	}
}

// The recovery coordinator's replay hands a record to a handler that
// needs two locks of the coordinator's store: one its own plain
// transaction holds while it waits (behind the dead node's orphan) for the
// other, which a second plain transaction has asked the lock manager for
// and waits on too. The handler's transaction gets past both, as the DLM
// lets recovery past the dead node's locks and the queue behind them; the
// plain transactions finish after the orphans are released.
func TestReplayPassesPlainWaitersBehindOrphan(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	defer b.Close()
	for _, d := range []string{"x", "y"} {
		if err := b.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ino := func(name string) uint64 {
		fi, err := b.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(FileStat).Ino
	}
	lo, hi := "x", "y" // lo comes first in lock order
	loIno, hiIno := ino(lo), ino(hi)
	if loIno > hiIno {
		lo, hi, loIno, hiIno = hi, lo, hiIno, loIno
	}
	hiLock := b.glockFor(classInode, hiIno).name
	// a changes hi last and dies holding it EX (cached): an orphan.
	err := a.Update(context.Background(), func(tx *Tx) error {
		if _, err := tx.Log("intent", []byte("k1")); err != nil {
			return err
		}
		return tx.WriteFile(hi+"/a1", []byte("a"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	lm.Kill("a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	plain := make(chan error, 2)
	// T1 asks the lock manager for hi: queued behind the orphan.
	go func() { plain <- b.WriteFile(hi+"/t1", []byte("t1"), 0o644) }()
	hiG := b.glockFor(classInode, hiIno)
	testutil.WaitFor(t, 5*time.Second, "plain request of b waiting for the orphan", func() bool {
		hiG.mu.Lock()
		defer hiG.mu.Unlock()
		return hiG.asking != nil
	})
	// Another node's plain request, queued in the lock manager behind
	// the orphan.
	cGrant := make(chan error, 1)
	go func() {
		l, err := lm.Node("c").Lock(ctx, hiLock, Exclusive, LockOptions{})
		if err == nil {
			err = l.Release()
		}
		cGrant <- err
	}()
	testutil.WaitFor(t, 5*time.Second, "plain request queued behind the orphan", func() bool {
		return slices.Contains(lm.Waiting(hiLock), "c:EX")
	})
	// T2 holds lo (PR) and waits for hi (for T1's request).
	loHeld := make(chan struct{})
	go func() {
		plain <- b.Update(ctx, func(tx *Tx) error {
			if _, err := tx.Stat(lo); err != nil { // lo held PR
				return err
			}
			select {
			case <-loHeld:
			default:
				close(loHeld)
			}
			return tx.WriteFile(hi+"/t2", []byte("t2"), 0o644)
		})
	}()
	<-loHeld
	testutil.WaitFor(t, 5*time.Second, "plain transaction holding "+lo+" and waiting", func() bool {
		g := b.glockFor(classInode, loIno)
		if g.rw.TryLock() {
			g.rw.Unlock()
			return false
		}
		return true
	})

	handled := 0
	b.Handle("intent", func(ctx context.Context, tx *Tx, rec Record) error {
		handled++
		for _, d := range []string{lo, hi} {
			if err := tx.WriteFile(d+"/"+string(rec.Payload), []byte("handled"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	st, err := b.ReplaySlot(ctx, 0)
	if err != nil {
		t.Fatalf("replay behind plain waiters: %v", err)
	}
	if st.Records != 1 {
		t.Fatalf("replay: %+v", st)
	}
	select {
	case err := <-plain:
		t.Fatalf("a plain transaction finished before the orphans were released: %v", err)
	default:
	}
	lm.ReleaseDead("a")
	for range 2 {
		if err := <-plain; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-cGrant; err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{lo + "/k1", hi + "/k1", hi + "/a1", hi + "/t1", hi + "/t2"} {
		if _, err := b.ReadFile(f); err != nil {
			t.Error(fmt.Errorf("after recovery: %w", err))
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, dev)
}

// A replay that waits says so: the phase of the slot's replay and the
// recovery lock its record handler waits for, with the live holder in the
// way; nothing once it is done.
func TestReplayWaitsReported(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	defer b.Close()
	for _, d := range []string{"d", "intents"} {
		if err := b.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := b.Stat("d")
	if err != nil {
		t.Fatal(err)
	}
	dLock := b.glockFor(classInode, fi.Sys().(FileStat).Ino).name
	logIntents(t, a, "k1")
	lm.Kill("a")
	// b writes d, which b caches: hand it to a live node "c" first.
	held, err := lm.Node("c").Lock(context.Background(), dLock, Exclusive, LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Handle("intent", func(ctx context.Context, tx *Tx, rec Record) error {
		return tx.WriteFile("d/"+string(rec.Payload), []byte("handled"), 0o644)
	})
	done := make(chan error, 1)
	go func() {
		_, err := b.ReplaySlot(context.Background(), 0)
		done <- err
	}()
	testutil.WaitFor(t, 10*time.Second, "the replay's wait reported", func() bool {
		var phase, lock bool
		for _, w := range b.ReplayWaits() {
			phase = phase || w.What == "replay" && strings.Contains(w.Detail, "handling records 1-1 of 1")
			lock = lock || w.What == "recovery lock" && w.Resource == dLock && w.Detail == "held by c EX"
		}
		return phase && lock
	})
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w := b.ReplayWaits(); len(w) != 0 {
		t.Fatalf("waits after the replay: %+v", w)
	}
}

// A plain transaction of the coordinator that reads a directory on every
// path (the root) and is stuck (as in a commit whose write waits for a
// dead node's region lock) does not keep the replay's handler from
// reading it too: a recovery read goes beside this node's readers.
func TestReplayReadsBesideStuckReader(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	defer b.Close()
	for _, d := range []string{"d", "intents", "handled"} {
		if err := b.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logIntents(t, a, "k1")
	lm.Kill("a")
	stuck, release := make(chan struct{}), make(chan struct{})
	plain := make(chan error, 1)
	go func() {
		plain <- b.View(context.Background(), func(tx *Tx) error {
			if _, err := tx.Stat("d"); err != nil { // the root and d held PR
				return err
			}
			close(stuck)
			<-release
			return nil
		})
	}()
	<-stuck
	b.Handle("intent", handledBy(t, "b", map[string]int{}, 0, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := b.ReplaySlot(ctx, 0)
	close(release)
	if err != nil || st.Records != 1 {
		t.Fatalf("replay beside a stuck reader: %+v %v", st, err)
	}
	if err := <-plain; err != nil {
		t.Fatal(err)
	}
	if got := handledFiles(t, b); got["k1"] != "b" {
		t.Fatalf("handled %v", got)
	}
}
