package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
)

// deadlineLeg is a leg behind a self-fence check, as the daemon puts one
// in front of every leg (fencing.Guard): once the deadline has passed,
// every write to it is refused with blockdev.ErrFenced before it is issued.
type deadlineLeg struct {
	blockdev.Device
	passed *atomic.Bool
	late   *atomic.Int64 // writes refused
}

func (l deadlineLeg) WriteAt(ctx context.Context, p []byte, off int64) error {
	if l.passed.Load() {
		l.late.Add(1)
		return fmt.Errorf("%w: deadline passed", blockdev.ErrFenced)
	}
	return l.Device.WriteAt(ctx, p, off)
}

// TestPausedWriterWritesNothingAfterItsDeadline: a node writes regions
// (its checksum areas cached and dirty, its marks set), is paused past its
// self-fence deadline, and another node recovers its slot and writes the
// same blocks. When the paused node wakes, nothing it does (its watchers'
// write-backs, a new write, clearing its marks and its open-volume marker
// at Close) changes a byte of any leg: every write the mirror issues goes
// through a leg and its check, none is batched past it.
func TestPausedWriterWritesNothingAfterItsDeadline(t *testing.T) {
	for _, cache := range []int64{0, FastConfig(0).ChecksumCache} {
		t.Run(fmt.Sprint("cache=", cache), func(t *testing.T) {
			ctx := context.Background()
			r := newRig(t, 2, 2)
			var passed atomic.Bool
			var late atomic.Int64
			victim, err := r.tryOpen(0, func(c *Config) {
				c.ChecksumCache = cache
				for i, d := range c.Legs {
					c.Legs[i] = deadlineLeg{Device: d, passed: &passed, late: &late}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			for i := int64(0); i < 3; i++ {
				if err := victim.vol.WriteAt(ctx, bytes.Repeat([]byte{0xAA}, 4*testBS), i*testRegion); err != nil {
					t.Fatal(err)
				}
			}
			passed.Store(true) // SIGSTOP past the deadline
			coord := r.open(1)
			if _, err := coord.vol.RecoverFenced(ctx, 0); err != nil {
				t.Fatal(err)
			}
			for i := int64(0); i < 3; i++ {
				if err := coord.vol.WriteAt(ctx, bytes.Repeat([]byte{0xBB}, 4*testBS), i*testRegion); err != nil {
					t.Fatal(err)
				}
			}
			if err := coord.vol.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := coord.vol.clean(ctx, true); err != nil {
				t.Fatal(err)
			}
			var before [][]byte
			for _, leg := range r.legs {
				before = append(before, leg.Peek(0, leg.Size()))
			}
			// SIGCONT: the woken node writes, and is stopped.
			if err := victim.vol.WriteAt(ctx, bytes.Repeat([]byte{0xCC}, testBS), testRegion); !errors.Is(err, blockdev.ErrFenced) {
				t.Fatalf("the woken node's write: %v, want blockdev.ErrFenced", err)
			}
			victim.vol.Close()
			for i, leg := range r.legs {
				if !bytes.Equal(leg.Peek(0, leg.Size()), before[i]) {
					t.Fatalf("leg %d changed after the paused node's deadline (%d writes refused): a write skipped the check", i, late.Load())
				}
			}
			if late.Load() == 0 {
				t.Fatal("the woken node tried no write at all: the test did not test")
			}
			if err := coord.vol.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
