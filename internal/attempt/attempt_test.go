package attempt

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLeaderChangeEndsTheAttempt(t *testing.T) {
	ch := make(chan struct{})
	ctx, cancel := Context(context.Background(), time.Minute, func() <-chan struct{} { return ch })
	defer cancel()
	if ctx.Err() != nil || LeaderChanged(ctx) {
		t.Fatal("attempt ended before the leader changed")
	}
	close(ch)
	<-ctx.Done()
	if !LeaderChanged(ctx) || !errors.Is(context.Cause(ctx), ErrLeaderChanged) {
		t.Fatalf("cause %v, want ErrLeaderChanged", context.Cause(ctx))
	}
}

func TestBoundEndsTheAttempt(t *testing.T) {
	for name, changes := range map[string]LeaderChanges{
		"no signal": nil,
		"nil chan":  func() <-chan struct{} { return nil },
		"no change": func() <-chan struct{} { return make(chan struct{}) },
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := Context(context.Background(), 10*time.Millisecond, changes)
			defer cancel()
			<-ctx.Done()
			if LeaderChanged(ctx) || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatalf("err %v cause %v, want the deadline", ctx.Err(), context.Cause(ctx))
			}
		})
	}
}

func TestCancelIsIdempotentAndNotALeaderChange(t *testing.T) {
	ch := make(chan struct{})
	ctx, cancel := Context(context.Background(), time.Minute, func() <-chan struct{} { return ch })
	cancel()
	cancel()
	close(ch)
	if !errors.Is(ctx.Err(), context.Canceled) || LeaderChanged(ctx) {
		t.Fatalf("err %v cause %v after cancel", ctx.Err(), context.Cause(ctx))
	}
}
