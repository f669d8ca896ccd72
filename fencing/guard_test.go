package fencing_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/fencetest"
	"github.com/shoal-ha/shoal/internal/clock"
)

// TestGuardPausedWriterWritesNothing is the lease-only paused writer: a
// node stopped past its deadline wakes up and its writes never reach the
// leg, while the node that recovered it writes the region.
func TestGuardPausedWriterWritesNothing(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(epoch)
	tg := fencetest.NewTarget(fencetest.Options{NoReservations: true}) // a file-like leg
	var deadline atomic.Int64
	deadline.Store(epoch.Add(2 * time.Second).UnixNano())
	g := fencing.NewGuard(func() time.Time { return time.Unix(0, deadline.Load()) }, clk)
	paused := g.Wrap(tg.Initiator("n1"))
	other := tg.Initiator("n2")

	block := func(b byte) []byte { return bytes.Repeat([]byte{b}, 512) }
	if err := paused.WriteAt(ctx, block('a'), 0); err != nil {
		t.Fatalf("write before the deadline: %v", err)
	}
	// SIGSTOP: no renewal, the clock runs on; the cluster waits out the
	// lease plus margin and another node writes the region.
	clk.Advance(5 * time.Second)
	if err := other.WriteAt(ctx, block('b'), 0); err != nil {
		t.Fatal(err)
	}
	// SIGCONT: the late write is refused before it is issued.
	if err := paused.WriteAt(ctx, block('x'), 0); !errors.Is(err, fencing.ErrSelfFenced) {
		t.Fatalf("late write = %v, want ErrSelfFenced", err)
	}
	if err := paused.Flush(ctx); !errors.Is(err, fencing.ErrSelfFenced) {
		t.Fatalf("late flush = %v", err)
	}
	if got := tg.Bytes()[0]; got != 'b' {
		t.Fatalf("leg holds %q, want the survivor's data", got)
	}
}

// slowDevice blocks writes until their context ends.
type slowDevice struct {
	blockdev.Device
	started chan struct{}
}

func (s slowDevice) WriteAt(ctx context.Context, p []byte, off int64) error {
	close(s.started)
	<-ctx.Done()
	return ctx.Err()
}

func TestGuardStopFailsInFlightAndLaterIO(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(epoch)
	tg := fencetest.NewTarget(fencetest.Options{})
	g := fencing.NewGuard(func() time.Time { return clk.Now().Add(time.Hour) }, clk)
	res := make(chan error, 1)
	sd := slowDevice{Device: tg.Initiator("n1"), started: make(chan struct{})}
	dev := g.Wrap(sd)
	go func() { res <- dev.WriteAt(ctx, make([]byte, 512), 0) }()
	<-sd.started
	g.Stop("lease lost")
	select {
	case err := <-res:
		if !errors.Is(err, fencing.ErrSelfFenced) {
			t.Fatalf("in-flight write = %v, want ErrSelfFenced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight write not failed by Stop")
	}
	if err := dev.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, fencing.ErrSelfFenced) {
		t.Fatalf("read after stop = %v", err)
	}
	if err := g.Check(); err == nil || !errors.Is(err, fencing.ErrSelfFenced) {
		t.Fatalf("check after stop = %v", err)
	}
}
