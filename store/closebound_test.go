package store

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
)

// hangDev hangs its next flush once armed, until the flush's context ends.
type hangDev struct {
	*blockdev.Mem
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
}

func (d *hangDev) Flush(ctx context.Context) error {
	d.mu.Lock()
	hang := d.armed
	d.armed = false
	d.mu.Unlock()
	if hang {
		close(d.entered)
		<-ctx.Done()
		return ctx.Err()
	}
	return d.Mem.Flush(ctx)
}

// A periodic checkpoint stuck in a flush of a volume that stopped
// answering does not hold Close up: Close cuts it short and makes its own
// checkpoint within Config.CloseTimeout.
func TestCloseCutsAStuckPeriodicCheckpoint(t *testing.T) {
	dev := &hangDev{Mem: newMem(t, 4096, FormatOptions{}), entered: make(chan struct{})}
	a := openNode(t, dev, NewMemLocks(), "a", 0, func(c *Config) { c.CheckpointInterval = 5 * time.Millisecond })
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	// This commit leaves its images for the periodic checkpoint, whose
	// flush (the next one) hangs.
	if err := a.WriteFile("d/f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev.mu.Lock()
	dev.armed = true
	dev.mu.Unlock()
	select {
	case <-dev.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no periodic checkpoint flushed within 10s")
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(DefaultCloseTimeout + 5*time.Second):
		t.Fatal("Close waits for a periodic checkpoint stuck in a flush")
	}
	checkClean(t, dev.Mem)
}

// stuckDev hangs every flush once stuck, until the flush's context ends.
type stuckDev struct {
	*blockdev.Mem
	stuck atomic.Bool
}

func (d *stuckDev) Flush(ctx context.Context) error {
	if d.stuck.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return d.Mem.Flush(ctx)
}

// A volume that stops answering flushes while a node has committed blocks
// not in place: Close gives up within Config.CloseTimeout (it used to wait
// for ever, checkpointing again for every lock it gave up), says
// ErrUnwritten, and keeps the locks over those blocks, so another node
// waits for the replay instead of reading them stale.
func TestCloseOnAStuckVolumeKeepsTheLocksForReplay(t *testing.T) {
	mem := newMem(t, 4096, FormatOptions{})
	dev := &stuckDev{Mem: mem}
	lm := NewMemLocks()
	const bound = 300 * time.Millisecond
	a := openNode(t, dev, lm, "a", 0, func(c *Config) { c.CloseTimeout = bound })
	b := openNode(t, mem, lm, "b", 1)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("kept "), 100)
	if err := a.WriteFile("d/f", want, 0o644); err != nil {
		t.Fatal(err)
	}
	dev.stuck.Store(true)
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		if !errors.Is(err, ErrUnwritten) {
			t.Fatalf("close on a volume whose flushes hang: %v, want ErrUnwritten", err)
		}
	case <-time.After(bound + 5*time.Second):
		t.Fatalf("Close still waits %s after its bound of %s", 5*time.Second, bound)
	}
	leftToReplay(t, lm, b, "d/f", want)
	b.Close()
	checkClean(t, mem)
}
