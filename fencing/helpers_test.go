package fencing_test

import (
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/clock"
)

// driveUntil advances the fake clock by step each time something waits on
// it, until done is closed. It fails the test after limit real time.
func driveUntil(t *testing.T, clk *clock.Fake, step time.Duration, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("operation did not finish while driving the fake clock")
		}
		if clk.Pending() > 0 {
			clk.Advance(step)
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}
