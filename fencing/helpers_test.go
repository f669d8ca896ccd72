package fencing_test

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/clock"
)

// driveUntil advances the fake clock by step each time something waits on
// it, until done is closed. It fails the test after 20 s of real time.
func driveUntil(t *testing.T, clk *clock.Fake, step time.Duration, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		err := clk.BlockUntilContext(ctx, 1)
		select {
		case <-done:
			return
		default:
		}
		if err != nil {
			t.Fatalf("operation did not finish while driving the fake clock: %v", err)
		}
		clk.Advance(step)
	}
}
