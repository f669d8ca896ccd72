package dlm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"

	"github.com/shoal-ha/shoal/internal/testutil"
)

func TestConvertAndDeadlock(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1) // two lock managers on one member: the table is what is tested
	a := startTestNode(t, c, 0, "a")
	b := startTestNode(t, c, 0, "b")
	for _, x := range []*testNode{a, b} {
		x.n.mu.Lock()
		x.n.cfg.DeadlockGrace = 500 * time.Millisecond
		x.n.mu.Unlock()
	}

	t.Run("UpAndDownConversion", func(t *testing.T) {
		la, err := a.n.Acquire(ctxT(t, 5*time.Second), Named("conv"), PR)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := b.n.Acquire(ctxT(t, 5*time.Second), Named("conv"), PR)
		if err != nil {
			t.Fatal(err)
		}
		// a's up-conversion waits for b's reader and keeps PR meanwhile.
		done := make(chan error, 1)
		go func() { done <- la.Convert(ctxT(t, 10*time.Second), EX) }()
		testutil.WaitFor(t, 5*time.Second, "a's conversion to queue", func() bool {
			for _, l := range b.n.Locks() {
				if l.Owner == a.n.Owner() && l.Held && l.Want == EX && l.Granted == PR {
					return true
				}
			}
			return false
		})
		if la.Mode() != PR {
			t.Fatalf("mode during conversion %s", la.Mode())
		}
		before := la.Token()
		if err := lb.Release(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if la.Mode() != EX || la.Token() <= before {
			t.Fatalf("after conversion: mode %s token %s (was %s)", la.Mode(), la.Token(), before)
		}
		if err := la.SetLVB([]byte("v2")); err != nil {
			t.Fatal(err)
		}
		// Down-conversion is local and immediate.
		if err := la.Convert(ctxT(t, 5*time.Second), CR); err != nil {
			t.Fatal(err)
		}
		if err := la.SetLVB([]byte("x")); !errors.Is(err, ErrBadMode) {
			t.Fatalf("value block under CR: %v", err)
		}
		la.Release()
		lb2, err := b.n.Acquire(ctxT(t, 5*time.Second), Named("conv"), PW)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := lb2.LVB(); !ok || string(v[:2]) != "v2" {
			t.Fatalf("b reads %q valid=%v", v, ok)
		}
		lb2.Release()
		if err := lb2.Release(); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("double release: %v", err)
		}
		checkAll(t, a, b)
	})

	t.Run("DeadlockReported", func(t *testing.T) {
		lx, err := a.n.Acquire(ctxT(t, 5*time.Second), Named("x"), EX)
		if err != nil {
			t.Fatal(err)
		}
		ly, err := b.n.Acquire(ctxT(t, 5*time.Second), Named("y"), EX)
		if err != nil {
			t.Fatal(err)
		}
		// a waits for y (asking for deadlock errors); b waits for x.
		aerr := make(chan error, 1)
		go func() {
			_, err := a.n.Acquire(ctxT(t, 20*time.Second), Named("y"), EX, FailOnDeadlock())
			aerr <- err
		}()
		bctx, bcancel := context.WithCancel(context.Background())
		defer bcancel()
		berr := make(chan error, 1)
		go func() {
			l, err := b.n.Acquire(bctx, Named("x"), EX)
			if err == nil {
				l.Release()
			}
			berr <- err
		}()
		testutil.WaitFor(t, 5*time.Second, "a cycle in the wait-for graph", func() bool { return len(OwnerCycles(a.n.WaitFor())) > 0 })
		select {
		case err := <-aerr:
			if !errors.Is(err, ErrDeadlock) {
				t.Fatalf("a: %v, want ErrDeadlock", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("deadlock not reported")
		}
		// a breaks the cycle by giving up x; b proceeds.
		lx.Release()
		select {
		case err := <-berr:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("b still waits after a gave up")
		}
		ly.Release()
		testutil.WaitFor(t, 5*time.Second, "the graph to clear", func() bool { return len(a.n.WaitFor()) == 0 })
		checkAll(t, a, b)
	})

	t.Run("ConversionDeadlockHasOneVictim", func(t *testing.T) {
		// Both hold PR and both convert to EX asking for deadlock errors:
		// the conversion queued last is the victim, on every node; the
		// other is granted EX once the victim releases.
		res := Named("convdeadlock")
		la, err := a.n.Acquire(ctxT(t, 5*time.Second), res, PR)
		if err != nil {
			t.Fatal(err)
		}
		lb, err := b.n.Acquire(ctxT(t, 5*time.Second), res, PR)
		if err != nil {
			t.Fatal(err)
		}
		errs := map[*Lock]chan error{la: make(chan error, 1), lb: make(chan error, 1)}
		for _, l := range []*Lock{la, lb} {
			go func() { errs[l] <- l.Convert(ctxT(t, 30*time.Second), EX, FailOnDeadlock()) }()
		}
		var victimID string
		testutil.WaitFor(t, 5*time.Second, "both nodes to name the same victim", func() bool {
			va, vb := a.n.DeadlockVictims(), b.n.DeadlockVictims()
			if len(va) != 1 || len(vb) != 1 || va[0] != vb[0] {
				return false
			}
			victimID = va[0]
			return true
		})
		// The victim is the conversion with the later revision.
		var convs []LockInfo
		for _, l := range a.n.Locks() {
			if l.Resource == res {
				convs = append(convs, l)
			}
		}
		if len(convs) != 2 {
			t.Fatalf("locks on %s: %+v", res, convs)
		}
		later := convs[0]
		if convs[1].QueuedRev > later.QueuedRev {
			later = convs[1]
		}
		if later.ID != victimID {
			t.Fatalf("victim %s, but the later conversion is %s (%+v)", victimID, later.ID, convs)
		}
		victim, other, otherNode := la, lb, b
		if later.Owner == b.n.Owner() {
			victim, other, otherNode = lb, la, a
		}
		// The side that is not the victim has waited in the cycle past the
		// grace period (its wait is back-dated, whatever the timing of its
		// checks): its next check, a quarter grace away, must not fail it.
		otherNode.n.mu.Lock()
		for _, w := range otherNode.n.locks[res.String()].waiters {
			if w.conv != nil {
				w.cycle = otherNode.n.cfg.Clock.Now().Add(-2 * otherNode.n.cfg.DeadlockGrace)
			}
		}
		otherNode.n.mu.Unlock()
		select {
		case err := <-errs[victim]:
			if !errors.Is(err, ErrDeadlock) {
				t.Fatalf("victim's conversion: %v, want ErrDeadlock", err)
			}
		case err := <-errs[other]:
			t.Fatalf("the side that is not the victim ended first: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("no side was told of the deadlock")
		}
		if victim.Mode() != PR {
			t.Fatalf("victim's mode after the failed conversion: %s", victim.Mode())
		}
		// The other side still waits while the victim holds PR, well past
		// the grace period (its own deadlock checks see no victim in it).
		testutil.WaitFor(t, 5*time.Second, "the victim's conversion to be withdrawn", func() bool {
			for _, l := range otherNode.n.Locks() {
				if l.ID == victimID {
					return l.Want == PR
				}
			}
			return false
		})
		select {
		case err := <-errs[other]:
			t.Fatalf("the other side ended while the victim still holds PR: %v", err)
		case <-time.After(3 * otherNode.n.cfg.DeadlockGrace):
		}
		before := other.Token()
		if err := victim.Release(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs[other]:
			if err != nil {
				t.Fatalf("the other side's conversion: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the other side was not granted EX after the victim released")
		}
		if other.Mode() != EX || other.Token() <= before {
			t.Fatalf("other side: mode %s token %s (was %s)", other.Mode(), other.Token(), before)
		}
		other.Release()
		checkAll(t, a, b)
	})
}
