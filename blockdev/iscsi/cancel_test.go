package iscsi_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
)

// TestCancelAndReset cancels writes mid-flight (each is either done, not
// sent, or of unknown outcome, never a plain failure), then resets the
// LUN, and checks the session keeps working.
func TestCancelAndReset(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":cancel")
	tgt.MustAddLUN(t, 1, 16<<20)
	d := openDevice(t, testConfig(t, tgt, 1))
	ctx := testCtx(t)

	var counts [3]int
	var mu sync.Mutex
	for round := 0; round < 5; round++ {
		cctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				buf := make([]byte, 256<<10)
				err := d.WriteAt(cctx, buf, int64(w)*int64(len(buf)))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					counts[0]++
				case errors.Is(err, blockdev.ErrWriteOutcomeUnknown):
					counts[1]++
				case errors.Is(err, context.Canceled):
					counts[2]++
				default:
					t.Errorf("cancelled write: %v", err)
				}
			}(w)
		}
		time.Sleep(time.Duration(round) * time.Millisecond)
		cancel()
		wg.Wait()
	}
	t.Logf("done %d, outcome unknown %d, not sent %d", counts[0], counts[1], counts[2])
	if err := d.Session().LUNReset(ctx, 1); err != nil {
		t.Fatalf("LUN reset: %v", err)
	}
	// The unit attention after the reset is absorbed by the retry.
	if err := d.WriteAt(ctx, make([]byte, 4096), 0); err != nil {
		t.Fatalf("write after reset: %v", err)
	}
	if err := d.ReadAt(ctx, make([]byte, 4096), 0); err != nil {
		t.Fatalf("read after reset: %v", err)
	}
}
