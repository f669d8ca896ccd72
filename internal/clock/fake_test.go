package clock

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBlockUntilWaitsForWaiters(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- f.BlockUntilContext(ctx, 2)
	}()
	tm := f.NewTimer(time.Second)
	select {
	case err := <-done:
		t.Fatalf("BlockUntil(2) returned with one waiter: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	tk := f.NewTicker(time.Second)
	defer tk.Stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.Advance(time.Second)
	<-tm.C()
	// The timer fired: one waiter (the ticker) is left.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := f.BlockUntilContext(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("BlockUntil(2) with one waiter = %v, want a deadline error", err)
	}
	// A Reset timer waits again.
	go tm.Reset(time.Second)
	f.BlockUntil(2)
}
