package fencing_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// waitPending waits until n timers or tickers wait on clk.
func waitPending(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
}

func TestSelfFenceAtDeadlineNotBefore(t *testing.T) {
	clk := clock.NewFake(epoch)
	var deadline atomic.Int64
	deadline.Store(epoch.Add(3 * time.Second).UnixNano())
	var stops atomic.Int32
	var stoppedAt atomic.Int64
	sf, err := fencing.NewSelfFence(fencing.SelfFenceConfig{
		Deadline: func() time.Time { return time.Unix(0, deadline.Load()) },
		StopIO: func(string) {
			stops.Add(1)
			stoppedAt.Store(clk.Now().UnixNano())
		},
		Clock: clk, Logger: testlog.New(t, "self"),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sf.Run(context.Background()) }()
	waitPending(t, clk, 1)
	// Renewals keep moving the deadline: no fence for 10 s.
	for i := 0; i < 10; i++ {
		clk.Advance(time.Second)
		deadline.Store(clk.Now().Add(3 * time.Second).UnixNano())
	}
	// Let the timer re-arm if it fired during the renewals.
	waitPending(t, clk, 1)
	if stops.Load() != 0 {
		t.Fatal("fenced while the lease was being renewed")
	}
	// Renewals stop; the deadline is 3 s away.
	last := time.Unix(0, deadline.Load())
	for clk.Now().Before(last) {
		waitPending(t, clk, 1)
		if stops.Load() != 0 {
			t.Fatalf("fenced %v before the deadline", last.Sub(clk.Now()))
		}
		clk.Advance(100 * time.Millisecond)
	}
	waitClosed(t, sf.Fenced(), "self-fence")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(0, stoppedAt.Load()); at.Before(last) || at.After(last.Add(100*time.Millisecond)) {
		t.Fatalf("I/O stopped at %v, deadline %v", at.Sub(epoch), last.Sub(epoch))
	}
	sf.Trigger("again")
	if stops.Load() != 1 {
		t.Fatalf("StopIO called %d times", stops.Load())
	}
}

func TestSelfFenceLostLease(t *testing.T) {
	clk := clock.NewFake(epoch)
	lost := make(chan struct{})
	var reason atomic.Value
	sf, err := fencing.NewSelfFence(fencing.SelfFenceConfig{
		Deadline: func() time.Time { return epoch.Add(time.Hour) },
		Lost:     lost,
		StopIO:   func(r string) { reason.Store(r) },
		Clock:    clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	go sf.Run(context.Background())
	close(lost)
	waitClosed(t, sf.Fenced(), "self-fence on lost lease")
	if reason.Load() != "lease lost" {
		t.Fatalf("reason %v", reason.Load())
	}
}

func TestSelfFenceWatchdog(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "watchdog")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(epoch)
	var deadline atomic.Int64
	deadline.Store(epoch.Add(5 * time.Second).UnixNano())
	sf, err := fencing.NewSelfFence(fencing.SelfFenceConfig{
		Deadline:    func() time.Time { return time.Unix(0, deadline.Load()) },
		StopIO:      func(string) {},
		Watchdog:    dev,
		PetInterval: time.Second,
		Clock:       clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sf.Run(context.Background()) }()
	waitPending(t, clk, 2) // deadline timer and pet ticker
	for i := 0; i < 4; i++ {
		clk.Advance(time.Second)
		testutil.WaitFor(t, 10*time.Second, "the watchdog to be petted", func() bool { return sf.Pets() >= i+2 })
	}
	clk.Advance(2 * time.Second) // past the deadline
	waitClosed(t, sf.Fenced(), "self-fence")
	<-done
	b, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != sf.Pets() || len(b) < 5 || bytes.ContainsRune(b, 'V') {
		t.Fatalf("watchdog got %q (%d pets): want only pets, left armed after a self-fence", b, sf.Pets())
	}

	// A clean stop disarms it with the magic 'V'.
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sf2, _ := fencing.NewSelfFence(fencing.SelfFenceConfig{
		Deadline: func() time.Time { return clk.Now().Add(time.Hour) }, StopIO: func(string) {}, Watchdog: dev, Clock: clk,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- sf2.Run(ctx) }()
	testutil.WaitFor(t, 10*time.Second, "the watchdog to be petted", func() bool { return sf2.Pets() >= 1 })
	cancel()
	<-done2
	if b, _ := os.ReadFile(dev); !bytes.HasSuffix(b, []byte("V")) {
		t.Fatalf("clean stop wrote %q, want the magic close", b)
	}

	// A missing device is skipped.
	sf3, _ := fencing.NewSelfFence(fencing.SelfFenceConfig{
		Deadline: func() time.Time { return epoch }, StopIO: func(string) {}, Watchdog: filepath.Join(dir, "absent"), Clock: clk,
	})
	go sf3.Run(context.Background())
	waitPending(t, clk, 1)
	clk.Advance(time.Millisecond)
	waitClosed(t, sf3.Fenced(), "self-fence without watchdog")
}
