package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// handledBy is a record handler that writes one file per record under
// handled/ naming who handled it, and fails if the record was handled
// already. seen counts the records it was called for (a handler may run
// more than once for one record when its transaction starts over); kill,
// when set, is called in the handler of the killAt-th distinct record.
func handledBy(t *testing.T, who string, seen map[string]int, killAt int, kill func()) Handler {
	return func(ctx context.Context, tx *Tx, rec Record) error {
		key := string(rec.Payload)
		seen[key]++
		if killAt > 0 && len(seen) == killAt && kill != nil {
			kill()
		}
		if b, err := tx.ReadFile("handled/" + key); err == nil {
			return fmt.Errorf("record %s handled twice (first by %s)", key, b)
		}
		return tx.WriteFile("handled/"+key, []byte(who), 0o644)
	}
}

// handledFiles lists who handled each record.
func handledFiles(t *testing.T, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := s.ReadDir("handled")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := s.ReadFile("handled/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// replayAsB kills node a (slot 0) and has b replay its slot, handing its
// intent records to handledBy(b); it returns the replay's figures and
// the handler's counts.
func replayAsB(t *testing.T, lm *MemLocks, b *Store) (ReplayStats, map[string]int) {
	t.Helper()
	lm.Kill("a")
	seen := map[string]int{}
	b.Handle("intent", handledBy(t, "b", seen, 0, nil))
	st, err := b.ReplaySlot(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return st, seen
}

func logIntents(t *testing.T, s *Store, keys ...string) []uint64 {
	t.Helper()
	var ids []uint64
	for _, k := range keys {
		// Update may run the function more than once: only the id of the
		// run that committed counts.
		var id uint64
		err := s.Update(context.Background(), func(tx *Tx) error {
			var err error
			if id, err = tx.Log("intent", []byte(k)); err != nil {
				return err
			}
			return tx.WriteFile("intents/"+k, []byte("pending"), 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// A node dies with records pending: the survivor's replay hands over each
// unacknowledged one exactly once, a second replay nothing, and what the
// dead node committed is all there.
func TestReplayHandsRecordsOnce(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	if err := a.MkdirAll("intents", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := b.MkdirAll("handled", 0o755); err != nil {
		t.Fatal(err)
	}
	ids := logIntents(t, a, "k1", "k2", "k3")
	// k2 finished: its result and the acknowledgement commit together.
	err := a.Update(context.Background(), func(tx *Tx) error {
		tx.Ack(ids[1])
		return tx.WriteFile("intents/k2", []byte("done"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	st, seen := replayAsB(t, lm, b)
	if got := handledFiles(t, b); st.Records != 2 || len(got) != 2 || got["k1"] != "b" || got["k3"] != "b" || seen["k2"] != 0 {
		t.Fatalf("replay handed %+v, handled %v", st, got)
	}
	st, err = b.ReplaySlot(context.Background(), 0)
	if err != nil || st.Records != 0 || st.Transactions != 0 {
		t.Fatalf("second replay: %+v %v", st, err)
	}
	lm.ReleaseDead("a")
	if got, _ := b.ReadFile("intents/k2"); string(got) != "done" {
		t.Fatalf("dead node's last commit: %q", got)
	}
	// The slot opens clean again.
	a2 := openNode(t, dev, lm, "a2", 0)
	a2.Close()
	b.Close()
	checkClean(t, dev)
}

// The coordinator dies during the replay, after handling a record: a
// second coordinator replays both journals and every record is handled
// exactly once.
func TestReplayCoordinatorDies(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	// b hands records over one to a transaction, so that it dies after
	// handing one over and before the next.
	b := openNode(t, dev, lm, "b", 1, func(c *Config) { c.ReplayBatch = 1 })
	c := openNode(t, dev, lm, "c", 2)
	mkdirs(t, a, "intents", "handled")
	logIntents(t, a, "r1", "r2", "r3", "r4")
	lm.Kill("a")
	seenB := map[string]int{}
	b.Handle("intent", handledBy(t, "b", seenB, 2, func() { lm.Kill("b") }))
	if _, err := b.ReplaySlot(context.Background(), 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("replay by a coordinator that died: %v", err)
	}
	seenC := map[string]int{}
	c.Handle("intent", handledBy(t, "c", seenC, 0, nil))
	st, err := c.ReplaySlot(context.Background(), 1)
	if err != nil {
		t.Fatalf("replay of the dead coordinator: %v", err)
	}
	t.Logf("coordinator's slot: %+v", st)
	st, err = c.ReplaySlot(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	lm.ReleaseDead("a")
	lm.ReleaseDead("b")
	got := handledFiles(t, c)
	if len(got) != 4 || got["r1"] != "b" || got["r2"] != "c" || got["r3"] != "c" || got["r4"] != "c" || st.Records != 3 {
		t.Fatalf("handled %v (stats %+v)", got, st)
	}
	// A replay once more changes nothing.
	if st, err := c.ReplaySlot(context.Background(), 0); err != nil || st.Records+st.Transactions != 0 {
		t.Fatalf("third replay: %+v %v", st, err)
	}
	c.Close()
	checkClean(t, dev)
}

// A node that crashed and opens its slot again, with nobody having
// recovered it, replays its own journal and hands its records over.
func TestOpenReplaysOwnSlot(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	a.MkdirAll("intents", 0o755)
	a.MkdirAll("handled", 0o755)
	logIntents(t, a, "x1", "x2")
	crashed := dev.CrashClone(blockdevKeepAll())
	a.Close()
	seen := map[string]int{}
	cfg := DefaultConfig(crashed, 0, NewMemLocks().Node("a2"))
	cfg.Handlers = map[string]Handler{"intent": handledBy(t, "a2", seen, 0, nil)}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := handledFiles(t, s); len(got) != 2 || got["x1"] != "a2" || got["x2"] != "a2" {
		t.Fatalf("own records handled %v", got)
	}
	s.Close()
	// Opening again hands nothing over.
	seen2 := map[string]int{}
	cfg.Handlers = map[string]Handler{"intent": handledBy(t, "a3", seen2, 0, nil)}
	cfg.Locks = NewMemLocks().Node("a3")
	s, err = Open(context.Background(), cfg)
	if err != nil || len(seen2) != 0 {
		t.Fatalf("reopen: %v %v", err, seen2)
	}
	s.Close()
	checkClean(t, crashed)
	// Without a handler, Open says which kind, and a later Open with one
	// hands the records over.
	crashed2 := dev.CrashClone(blockdevKeepAll())
	if _, err := Open(context.Background(), DefaultConfig(crashed2, 0, NewMemLocks().Node("a4"))); !errors.Is(err, ErrNoHandler) {
		t.Fatalf("open without a handler: %v", err)
	}
	cfg = DefaultConfig(crashed2, 0, NewMemLocks().Node("a5"))
	cfg.Handlers = map[string]Handler{"intent": handledBy(t, "a5", map[string]int{}, 0, nil)}
	if s, err = Open(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := handledFiles(t, s); len(got) != 2 {
		t.Fatalf("handled after a failed open: %v", got)
	}
	s.Close()
	checkClean(t, crashed2)
}

func TestRecordsSurviveCheckpoints(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{Slots: 2, JournalBlocks: 40, Align: 1})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	a.MkdirAll("intents", 0o755)
	a.MkdirAll("handled", 0o755)
	ids := logIntents(t, a, "keep")
	// Many transactions wrap the small journal several times.
	for i := 0; i < 60; i++ {
		if err := a.WriteFile(fmt.Sprintf("intents/f%d", i%5), []byte(strings.Repeat("x", i*100)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if a.Stats().Checkpoints < 3 {
		t.Fatalf("only %d checkpoints", a.Stats().Checkpoints)
	}
	lm.Kill("a")
	b.Handle("intent", handledBy(t, "b", map[string]int{}, 0, nil))
	if _, err := b.ReplaySlot(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	lm.ReleaseDead("a")
	if got := handledFiles(t, b); len(got) != 1 || got["keep"] != "b" {
		t.Fatalf("record %d carried across checkpoints: handled %v", ids[0], got)
	}
	if _, err := b.ReplaySlot(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	checkClean(t, dev)
	_ = fs.ErrNotExist
}

// A checkpoint made while a record is pending leaves the journal's tail
// at the record's transaction instead of carrying the record forward (one
// journal write and flush fewer per lock hand-over while requests are in
// flight). The images behind the tail are in place: a replay after the
// node's death hands the record over once and writes none of them back
// over what another node changed since.
func TestCheckpointKeepsTheTailAtAPendingRecord(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{Slots: 2})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	mkdirs(t, a, "intents", "handled", "d")
	logIntents(t, a, "keep")
	if err := a.WriteFile("d/f", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.jr.mu.Lock()
	h, last := a.jr.hdr, a.jr.lastSeq
	a.jr.mu.Unlock()
	if h.AppliedSeq != last || h.TailSeq >= last {
		t.Fatalf("after the checkpoint: tail at %d, applied %d, last %d: want the tail kept before the last transaction (no carry)", h.TailSeq, h.AppliedSeq, last)
	}
	// Another node rewrites the file: its inode is among the images the
	// dead node's journal still holds behind the kept tail.
	if err := b.WriteFile("d/f", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := replayAsB(t, lm, b)
	lm.ReleaseDead("a")
	if got := handledFiles(t, b); st.Records != 1 || len(got) != 1 || got["keep"] != "b" {
		t.Fatalf("replay handed over %d records (handled %v), want the pending one once", st.Records, got)
	}
	if got, err := b.ReadFile("d/f"); err != nil || string(got) != "new" {
		t.Fatalf("after the replay d/f = %q (%v), want the other node's %q", got, err, "new")
	}
	if st, err := b.ReplaySlot(context.Background(), 0); err != nil || st.Records != 0 {
		t.Fatalf("second replay: %d records (%v), want none", st.Records, err)
	}
	b.Close()
	checkClean(t, dev)
}

// Records whose handlers change many blocks each: the replay's batch of
// them does not fit in one journal transaction and is halved until it
// does; every record is still handled exactly once.
func TestReplayBatchTooLargeIsHalved(t *testing.T) {
	dev := newMem(t, 16384, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	mkdirs(t, a, "intents", "handled")
	var keys []string
	for i := range DefaultReplayBatch {
		keys = append(keys, fmt.Sprintf("k%02d", i))
	}
	logIntents(t, a, keys...)
	lm.Kill("a")
	runs := map[string]int{}
	b.Handle("intent", func(ctx context.Context, tx *Tx, rec Record) error {
		key := string(rec.Payload)
		runs[key]++
		// About 45 blocks: 16 such records need more than a transaction
		// may hold.
		for i := range 40 {
			if err := tx.WriteFile(fmt.Sprintf("handled/%s-%02d", key, i), []byte(key), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	st, err := b.ReplaySlot(context.Background(), 0)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if st.Records != len(keys) {
		t.Fatalf("replay handed %d records, want %d", st.Records, len(keys))
	}
	if st, err := b.ReplaySlot(context.Background(), 0); err != nil || st.Records != 0 {
		t.Fatalf("second replay: %+v %v", st, err)
	}
	// The recovery ends: plain reads of what the dead node held go on.
	lm.ReleaseDead("a")
	ents, err := b.ReadDir("handled")
	if err != nil || len(ents) != 40*len(keys) {
		t.Fatalf("%d files handled (%v), want %d", len(ents), err, 40*len(keys))
	}
	retried := 0
	for _, k := range keys {
		if runs[k] > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Fatalf("no handler ran again: the batch fitted, the test proves nothing (runs %v)", runs)
	}
	b.Close()
	checkClean(t, dev)
}

// TestOpenRecoversOwnSlotOverItsOrphan: every node died at once (as when
// etcd is cut off from all of them), so the slot's lock is still held by
// this node's dead incarnation and nobody is left to recover it. Open
// must not wait for that orphan: it recovers the slot itself under a
// recovery grant, after writing in place the images of another dead
// node's last transaction (which touched the directory its own record's
// handler changes under a recovery lock: written later, that image would
// undo the handler's change). The coordinator's replay of the dead
// incarnation afterwards finds the slot recovered and leaves it.
func TestOpenRecoversOwnSlotOverItsOrphan(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	owner := func(o string) func(*Config) { return func(c *Config) { c.Owner = o } }
	a := openNode(t, dev, lm, "a", 0, owner("a/1"))
	b := openNode(t, dev, lm, "b", 1, owner("b/1"))
	c := openNode(t, dev, lm, "c", 2, owner("c/1"))
	mkdirs(t, a, "intents", "handled")
	logIntents(t, a, "a1")
	logIntents(t, b, "b1") // b's last transaction changes intents/
	lm.Kill("a")
	lm.Kill("b")
	// The handler of a's record changes intents/ too.
	done := func(who string) Handler {
		return func(ctx context.Context, tx *Tx, rec Record) error {
			return tx.WriteFile("intents/done-"+string(rec.Payload), []byte(who), 0o644)
		}
	}
	opened := make(chan error, 1)
	var a2 *Store
	go func() {
		var err error
		cfg := DefaultConfig(dev, 0, lm.Node("a2"))
		cfg.Owner = "a/2"
		cfg.Logger = testlog.New(t, "a2")
		cfg.Handlers = map[string]Handler{"intent": done("a2")}
		a2, err = Open(context.Background(), cfg)
		opened <- err
	}()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the new incarnation's open waits for its dead incarnation's slot lock, which only a recovery releases")
	}
	t.Cleanup(func() { _ = a2.Close() })
	c.Handle("intent", done("c"))
	st, err := c.ReplayOwner(context.Background(), "a/1")
	if err != nil || len(st) != 0 {
		t.Fatalf("coordinator's replay of a's dead incarnation: %+v, %v (the slot is a/2's now)", st, err)
	}
	// The new incarnation, asked to recover its predecessor (as a
	// coordinator on that node is), reports what its open did.
	st, err = a2.ReplayOwner(context.Background(), "a/1")
	if err != nil || len(st) != 1 || !st[0].ByOpen || st[0].Slot != 0 || st[0].Records != 1 {
		t.Fatalf("new incarnation's report of its predecessor's replay: %+v, %v; want the open's, with 1 record", st, err)
	}
	if _, err := c.ReplayOwner(context.Background(), "b/1"); err != nil {
		t.Fatal(err)
	}
	lm.ReleaseDead("a")
	lm.ReleaseDead("b")
	for name, want := range map[string]string{"intents/done-a1": "a2", "intents/done-b1": "c", "intents/a1": "pending", "intents/b1": "pending"} {
		if got, err := c.ReadFile(name); err != nil || string(got) != want {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
	if err := a2.WriteFile("handled/after", []byte("x"), 0o644); err != nil {
		t.Fatalf("a/2 writes after its recovery: %v", err)
	}
	a2.Close()
	c.Close()
	checkClean(t, dev)
}

// writeCountDev counts the writes of every block of the store's
// allocation groups (whole writes: a run of blocks counts once per block).
type writeCountDev struct {
	blockdev.Device
	from int64 // first byte counted

	mu     sync.Mutex
	writes map[int64]int
	calls  int
}

func (d *writeCountDev) WriteAt(ctx context.Context, p []byte, off int64) error {
	if off >= d.from {
		d.mu.Lock()
		d.calls++
		for o := off; o < off+int64(len(p)); o += BlockSize {
			d.writes[o/BlockSize]++
		}
		d.mu.Unlock()
	}
	return d.Device.WriteAt(ctx, p, off)
}

// A dead node's journal holds several transactions that rewrote the same
// blocks: the replay leaves each block's last image in place and writes
// every block once, contiguous blocks in one write (it is in the path of
// every request the dead node held).
func TestReplayWritesEachBlockOnceWithItsLastImage(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	sb, err := ReadSuperblock(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := a.WriteFile("d/f", []byte(fmt.Sprintf("version %d", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lm.Kill("a")
	counted := &writeCountDev{Device: dev, from: int64(sb.AGStart) * BlockSize, writes: map[int64]int{}}
	b := openNode(t, dev, lm, "b", 1, func(c *Config) { c.RecoveryDevice = counted })
	st, err := b.ReplaySlot(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied < 5 {
		t.Fatalf("replay applied %d transactions, want at least the 5 rewrites: %+v", st.Applied, st)
	}
	counted.mu.Lock()
	blocks, calls := len(counted.writes), counted.calls
	for blk, n := range counted.writes {
		if n != 1 {
			t.Errorf("block %d written %d times by the replay, want once", blk, n)
		}
	}
	counted.mu.Unlock()
	if blocks != st.Blocks || calls > blocks {
		t.Errorf("replay wrote %d blocks in %d writes, says %d blocks", blocks, calls, st.Blocks)
	}
	lm.ReleaseDead("a")
	if got, err := b.ReadFile("d/f"); err != nil || string(got) != "version 4" {
		t.Fatalf("after the replay d/f = %q, %v; want the last version", got, err)
	}
	b.Close()
	checkClean(t, dev)
}

// The records of a dead node's journal are handed over and the journal is
// emptied in one commit of the recovering node (the batch fits): each
// commit is a journal write and flush on every leg, in the path of the
// dead node's requests. Handed over once, and a second replay finds
// nothing.
func TestReplayHandsRecordsAndEmptiesInOneCommit(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	if err := a.MkdirAll("intents", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := b.MkdirAll("handled", 0o755); err != nil {
		t.Fatal(err)
	}
	logIntents(t, a, "k1", "k2", "k3")
	lm.Kill("a")
	seen := map[string]int{}
	b.Handle("intent", handledBy(t, "b", seen, 0, nil))
	before := b.Stats().Commits
	st, err := b.ReplaySlot(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Stats().Commits - before; got != 1 {
		t.Errorf("replay of 3 records took %d commits, want 1", got)
	}
	if got := handledFiles(t, b); st.Records != 3 || len(got) != 3 {
		t.Fatalf("replay handed %+v, handled %v", st, got)
	}
	st, err = b.ReplaySlot(context.Background(), 0)
	if err != nil || st.Records != 0 || st.Transactions != 0 {
		t.Fatalf("second replay: %+v %v", st, err)
	}
	lm.ReleaseDead("a")
	a2 := openNode(t, dev, lm, "a2", 0)
	a2.Close()
	b.Close()
	checkClean(t, dev)
}

// readCountDev counts the reads of each block in [from, to).
type readCountDev struct {
	blockdev.Device
	from, to int64 // blocks

	mu    sync.Mutex
	reads map[int64]int
}

func (d *readCountDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.mu.Lock()
	for b := off / BlockSize; b < (off+int64(len(p))+BlockSize-1)/BlockSize; b++ {
		if b >= d.from && b < d.to {
			d.reads[b]++
		}
	}
	d.mu.Unlock()
	return d.Device.ReadAt(ctx, p, off)
}

// The replay reads a dead node's journal once: after the images are in
// place it reads the journal again only when they carried a header of
// that journal (a dead recovery's cursor).
func TestReplayReadsTheDeadJournalOnce(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	sb, err := ReadSuperblock(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	if err := a.MkdirAll("intents", 0o755); err != nil {
		t.Fatal(err)
	}
	// The journal's transactions, past its two header blocks.
	start := int64(sb.journalStart(0))
	counted := &readCountDev{Device: dev, from: start + journalData, to: start + int64(sb.JournalBlocks), reads: map[int64]int{}}
	b := openNode(t, counted, lm, "b", 1)
	if err := b.MkdirAll("handled", 0o755); err != nil {
		t.Fatal(err)
	}
	logIntents(t, a, "k1", "k2")
	lm.Kill("a")
	seen := map[string]int{}
	b.Handle("intent", handledBy(t, "b", seen, 0, nil))
	total := func() int {
		counted.mu.Lock()
		defer counted.mu.Unlock()
		n := 0
		for _, k := range counted.reads {
			n += k
		}
		clear(counted.reads)
		return n
	}
	// What one scan of the journal reads (past its end too, to see
	// whether it wraps).
	total()
	hdr, err := b.readJournalHeader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := b.scanJournal(context.Background(), 0, hdr); err != nil {
		t.Fatal(err)
	}
	once := total()
	st, err := b.ReplaySlot(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied == 0 || st.Records != 2 {
		t.Fatalf("replay: %+v", st)
	}
	if got := total(); once == 0 || got != once {
		t.Errorf("the replay read the dead journal's blocks %d times, one scan reads them %d times", got, once)
	}
	if got := handledFiles(t, b); len(got) != 2 {
		t.Fatalf("handled %v", got)
	}
}

// A replay's handler that reads a file and then rewrites it (as the web
// tier's does with a session) does not start its transaction over: the
// recovery grant it read under is EX already. A start-over gives back
// every recovery grant and asks for each again (they are not cached), a
// lock-manager request each in the path of every request the dead node
// held.
func TestReplayHandlerRewritesWithoutStartingOver(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	mkdirs(t, a, "intents", "handled")
	if err := a.WriteFile("counter", []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := []string{"k1", "k2", "k3", "k4", "k5", "k6"}
	logIntents(t, a, keys...)
	lm.Kill("a")
	var restarts []string
	b.restarted = func(r *retryError) { restarts = append(restarts, r.Error()) }
	b.Handle("intent", func(ctx context.Context, tx *Tx, rec Record) error {
		c, err := tx.ReadFile("counter")
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(c))
		if err != nil {
			return err
		}
		if err := tx.WriteFile("counter", []byte(strconv.Itoa(n+1)), 0o644); err != nil {
			return err
		}
		return tx.WriteFile("handled/"+string(rec.Payload), []byte("b"), 0o644)
	})
	before := b.Stats().LockRequests
	st, err := b.ReplaySlot(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	asked := b.Stats().LockRequests - before
	b.restarted = nil
	lm.ReleaseDead("a")
	if c, err := b.ReadFile("counter"); err != nil || string(c) != strconv.Itoa(len(keys)) || st.Records != len(keys) {
		t.Fatalf("after the replay of %d records (%+v): counter %q, %v", len(keys), st, c, err)
	}
	if len(restarts) > 0 {
		t.Fatalf("the replay's transaction started over %d times (%d lock requests): %q", len(restarts), asked, restarts)
	}
}

// A replay's handler reads under plain PR grants where no dead node holds
// the lock in a conflicting mode: the live nodes keep their cached PR
// grants (a recovery grant is EX and would call each one back, a
// hand-over in the path of the dead node's requests). What the dead node
// or a live one holds EX is still read under a recovery grant.
func TestReplayReadsBesideLiveReaders(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	c := openNode(t, dev, lm, "c", 2)
	d := openNode(t, dev, lm, "d", 3)
	mkdirs(t, a, "intents", "handled", "shared")
	if err := a.WriteFile("shared/x", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile("shared/mine", []byte("a's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ReadFile("shared/x"); err != nil || string(got) != "x" {
		t.Fatalf("c reads %q, %v", got, err)
	}
	logIntents(t, a, "k1", "k2")
	// a holds shared/mine EX (it wrote it last); c caches PR grants on
	// shared and shared/x.
	if err := a.WriteFile("shared/mine", []byte("a's, changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	// d holds EX grants on theirs and theirs/w (it made them last): the
	// replay's read of them cannot go beside, and takes recovery grants.
	mkdirs(t, d, "theirs")
	if err := d.WriteFile("theirs/w", []byte(", d's"), 0o644); err != nil {
		t.Fatal(err)
	}
	lm.Kill("a")
	b.Handle("intent", func(ctx context.Context, tx *Tx, rec Record) error {
		x, err := tx.ReadFile("shared/x")
		if err != nil {
			return err
		}
		mine, err := tx.ReadFile("shared/mine")
		if err != nil {
			return err
		}
		w, err := tx.ReadFile("theirs/w")
		if err != nil {
			return err
		}
		return tx.WriteFile("handled/"+string(rec.Payload), append(append(x, mine...), w...), 0o644)
	})
	gaveBack := c.Stats().LockReleases
	st, err := b.ReplaySlot(context.Background(), 0)
	if err != nil || st.Records != 2 {
		t.Fatalf("replay: %+v, %v", st, err)
	}
	if n := c.Stats().LockReleases - gaveBack; n != 0 {
		t.Errorf("the live reader gave back %d grants to the replay", n)
	}
	if d.Stats().LockReleases == 0 {
		t.Errorf("the live writer kept its EX grants through the replay's reads")
	}
	lm.ReleaseDead("a")
	for _, k := range []string{"k1", "k2"} {
		if got, err := b.ReadFile("handled/" + k); err != nil || string(got) != "xa's, changed, d's" {
			t.Fatalf("handled/%s: %q, %v", k, got, err)
		}
	}
	if got, err := c.ReadFile("shared/x"); err != nil || string(got) != "x" {
		t.Fatalf("c reads %q, %v", got, err)
	}
}
