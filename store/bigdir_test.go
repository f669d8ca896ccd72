package store

import (
	"context"
	"flag"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
)

var bigDir = flag.Int("store.bigdir", 2000, "entries in TestBigDirectory (the design target is 100000)")

// countDev counts reads.
type countDev struct {
	blockdev.Device
	reads atomic.Int64
}

func (d *countDev) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.reads.Add(1)
	return d.Device.ReadAt(ctx, p, off)
}

// A directory with many entries: a lookup on a node with a cold cache
// reads the inode and one short bucket chain, not the directory.
func TestBigDirectory(t *testing.T) {
	n := *bigDir
	if testing.Short() {
		n = 500
	}
	mem := newMem(t, int64(n+n/8+4096), FormatOptions{Slots: 2})
	lm := NewMemLocks()
	s := openNode(t, mem, lm, "a", 0)
	if err := s.Mkdir("big", 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := s.Update(context.Background(), func(tx *Tx) error {
			return tx.WriteFile(fmt.Sprintf("big/entry-%06d.html", i), nil, 0o644)
		}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	dev := &countDev{Device: mem}
	r := openNode(t, dev, NewMemLocks(), "b", 1)
	defer r.Close()
	before := dev.reads.Load()
	if _, err := r.Stat(fmt.Sprintf("big/entry-%06d.html", n/2)); err != nil {
		t.Fatal(err)
	}
	reads := dev.reads.Load() - before
	// root inode, its leaf, the directory inode, its bucket chain, the file.
	if max := int64(4 + (n/dirBuckets*24)/BlockSize + 2); reads > max {
		t.Fatalf("a cold lookup in a directory of %d entries took %d reads (max %d)", n, reads, max)
	}
	ents, err := r.ReadDir("big")
	if err != nil || len(ents) != n {
		t.Fatalf("listing: %d entries, %v", len(ents), err)
	}
	t.Logf("%d entries: cold lookup %d reads", n, reads)
}
