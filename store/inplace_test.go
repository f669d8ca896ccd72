package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
)

// inPlaceDev wraps a device and acts on the in-place writes of a commit:
// once armed, the writes outside the journals that follow a journal write
// and a flush (the commit record made durable) are stalled or failed.
type inPlaceDev struct {
	*blockdev.Mem
	journals [2]int64 // byte range of the journals

	mu        sync.Mutex
	armed     bool
	journaled bool // a journal write since arming
	flushed   bool // and a flush after it
	stall     chan context.Context
	release   chan struct{}
	fail      bool // fail the in-place writes with ErrIO
	failed    int
}

func newInPlaceDev(t *testing.T, m *blockdev.Mem) *inPlaceDev {
	t.Helper()
	sb, err := ReadSuperblock(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return &inPlaceDev{Mem: m, journals: [2]int64{int64(sb.JournalStart) * BlockSize, int64(sb.AGStart) * BlockSize}}
}

func (d *inPlaceDev) inJournals(off int64) bool { return off >= d.journals[0] && off < d.journals[1] }

func (d *inPlaceDev) WriteAt(ctx context.Context, p []byte, off int64) error {
	d.mu.Lock()
	if d.armed && d.inJournals(off) {
		d.journaled, d.flushed = true, false
	}
	inPlace := d.armed && d.flushed && !d.inJournals(off)
	stall, release, fail := d.stall, d.release, d.fail
	if inPlace && stall != nil {
		d.stall = nil // the first in-place write only
	}
	if inPlace && fail {
		d.failed++
	}
	d.mu.Unlock()
	switch {
	case inPlace && fail:
		return blockdev.ErrIO
	case inPlace && stall != nil:
		stall <- ctx
		<-release
		// A device looks at its context when it gets to the write.
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return d.Mem.WriteAt(ctx, p, off)
}

func (d *inPlaceDev) Flush(ctx context.Context) error {
	d.mu.Lock()
	if d.journaled {
		d.flushed = true
	}
	d.mu.Unlock()
	return d.Mem.Flush(ctx)
}

func (d *inPlaceDev) set(f func(d *inPlaceDev)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

// A commit writes its journal only; its blocks go in place when another
// node asks for their locks (the hand-over checkpoints), and until then
// the committing node reads them from memory. A caller whose context ends
// after the commit returned changes nothing of that.
func TestCommitLeavesInPlaceWritesToTheHandOver(t *testing.T) {
	mem := newMem(t, 4096, FormatOptions{})
	dev := newInPlaceDev(t, mem)
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, mem, lm, "b", 1)
	defer b.Close()
	v1 := bytes.Repeat([]byte("one "), 2000)
	v2 := bytes.Repeat([]byte("two "), 2000)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile("d/f", v1, 0o644); err != nil {
		t.Fatal(err)
	}
	stall, release := make(chan context.Context, 1), make(chan struct{})
	dev.set(func(d *inPlaceDev) { d.armed, d.stall, d.release = true, stall, release })
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Update(ctx, func(tx *Tx) error { return tx.WriteFile("d/f", v2, 0o644) }); err != nil {
		t.Fatalf("update: %v", err)
	}
	cancel()
	select {
	case <-stall:
		t.Fatal("the commit wrote in place")
	default:
	}
	if got, err := a.ReadFile("d/f"); err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("committing node read %d bytes (%v) before the hand-over, want the committed %d", len(got), err, len(v2))
	}
	read := make(chan error, 1)
	go func() {
		got, err := b.ReadFile("d/f")
		if err == nil && !bytes.Equal(got, v2) {
			err = fmt.Errorf("read %d bytes, want the committed %d", len(got), len(v2))
		}
		read <- err
	}()
	select {
	case <-stall:
	case err := <-read:
		t.Fatalf("other node read before the committing node wrote in place: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no in-place write within 10s of the other node's read")
	}
	select {
	case err := <-read:
		t.Fatalf("other node read while the hand-over's in-place write stalled: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-read; err != nil {
		t.Fatalf("other node after the hand-over: %v", err)
	}
	dev.set(func(d *inPlaceDev) { d.armed = false })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	checkClean(t, mem)
}

// A committed transaction whose in-place writes fail stays what this node
// reads (its data block is read from the device through the kept images),
// its locks are not handed on while the blocks are not in place (another
// node waits, never reads stale blocks), and once the volume takes writes
// again the hand-over writes them and the other node reads them.
func TestFailedInPlaceWriteStaysAuthoritative(t *testing.T) {
	mem := newMem(t, 4096, FormatOptions{})
	dev := newInPlaceDev(t, mem)
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, mem, lm, "b", 1)
	v1 := bytes.Repeat([]byte("one "), 2000)
	v2 := bytes.Repeat([]byte("two "), 2000)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile("d/f", v1, 0o644); err != nil {
		t.Fatal(err)
	}
	dev.set(func(d *inPlaceDev) { d.armed, d.fail = true, true })
	if err := a.Update(context.Background(), func(tx *Tx) error { return tx.WriteFile("d/f", v2, 0o644) }); err != nil {
		t.Fatalf("committed update reported %v", err)
	}
	// The commit leaves its blocks for the checkpoint: make it now.
	if err := a.checkpoint(context.Background()); !errors.Is(err, ErrUnwritten) {
		t.Fatalf("checkpoint with failing in-place writes: %v, want ErrUnwritten", err)
	}
	dev.mu.Lock()
	failed := dev.failed
	dev.mu.Unlock()
	if failed == 0 {
		t.Fatal("no in-place write was failed: the test does not test")
	}
	got, err := a.ReadFile("d/f")
	if err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("writer read %d bytes (%v) after its in-place writes failed, want the committed %d", len(got), err, len(v2))
	}
	if rep, err := a.Check(context.Background()); err != nil || rep.Err() != nil {
		t.Fatalf("online check on the writer: %v %v", err, rep.Err())
	}
	// The other node must not get the locks while the blocks are not in
	// place: its read waits (and gives up here) rather than read v1.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err = b.View(ctx, func(tx *Tx) error {
		got, err := tx.ReadFile("d/f")
		if err == nil && !bytes.Equal(got, v2) {
			return errors.New("stale or torn contents read by the other node")
		}
		return err
	})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("other node's read while the writer's blocks are not in place: %v, want a wait", err)
	}
	dev.set(func(d *inPlaceDev) { d.fail, d.armed = false, false })
	got, err = b.ReadFile("d/f")
	if err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("other node read %d bytes (%v) once the volume takes writes, want the committed %d", len(got), err, len(v2))
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	checkClean(t, mem)
}

// A node that cannot write its committed blocks in place even when it
// closes says so (ErrUnwritten) and keeps the slot's lock and the locks
// over those blocks: nobody reads them stale, and the node's recovery
// replays its journal, after which every node reads the committed data.
func TestCloseWithUnwrittenBlocksLeavesThemToReplay(t *testing.T) {
	mem := newMem(t, 4096, FormatOptions{})
	dev := newInPlaceDev(t, mem)
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, mem, lm, "b", 1)
	defer b.Close()
	v2 := bytes.Repeat([]byte("two "), 2000)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile("d/f", []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The directory in place: only the file's blocks stay unwritten.
	if err := a.checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	dev.set(func(d *inPlaceDev) { d.armed, d.fail = true, true })
	if err := a.Update(context.Background(), func(tx *Tx) error { return tx.WriteFile("d/f", v2, 0o644) }); err != nil {
		t.Fatalf("committed update reported %v", err)
	}
	if err := a.Close(); !errors.Is(err, ErrUnwritten) {
		t.Fatalf("close with committed blocks not in place: %v, want ErrUnwritten", err)
	}
	leftToReplay(t, lm, b, "d/f", v2)
	b.Close()
	checkClean(t, mem)
}

// leftToReplay checks what node a (slot 0), closed with committed blocks
// not in place, leaves: b's read of name waits (a keeps its locks); once a
// is recovered as a failed one, b reads want.
func leftToReplay(t *testing.T, lm *MemLocks, b *Store, name string, want []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := b.View(ctx, func(tx *Tx) error { _, err := tx.ReadFile(name); return err })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("other node's read of blocks the closed node could not write: %v, want a wait", err)
	}
	lm.Kill("a")
	if _, err := b.ReplaySlot(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	lm.ReleaseDead("a")
	got, err := b.ReadFile(name)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the replay the other node read %d bytes (%v), want the committed %d", len(got), err, len(want))
	}
}
