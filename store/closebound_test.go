package store

import (
	"context"
	"sync"
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
// checkpoint within CloseTimeout.
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
	case <-time.After(CloseTimeout + 5*time.Second):
		t.Fatal("Close waits for a periodic checkpoint stuck in a flush")
	}
	checkClean(t, dev.Mem)
}
