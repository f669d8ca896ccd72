package fencing_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeLeases expires a lease at a fixed time on the fake clock.
type fakeLeases struct {
	clk     *clock.Fake
	mu      sync.Mutex
	expires map[int64]time.Time
	err     error
}

func (f *fakeLeases) LeaseTTL(ctx context.Context, id int64) (time.Duration, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, false, f.err
	}
	exp, ok := f.expires[id]
	if !ok || !f.clk.Now().Before(exp) {
		return 0, false, nil
	}
	return exp.Sub(f.clk.Now()), true, nil
}

func TestLeaseFencerWaitsExpiryPlusMargin(t *testing.T) {
	clk := clock.NewFake(epoch)
	leases := &fakeLeases{clk: clk, expires: map[int64]time.Time{7: epoch.Add(3 * time.Second)}}
	f, err := fencing.NewLeaseFencer(fencing.LeaseConfig{
		Leases: leases, Margin: 500 * time.Millisecond, Poll: 250 * time.Millisecond,
		Clock: clk, Logger: testlog.New(t, "lease"),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var fenceErr error
	var fencedAt time.Time
	go func() {
		defer close(done)
		fenceErr = f.Fence(context.Background(), fencing.NodeRef{Name: "n1", Incarnation: "i", Key: 1, LeaseID: 7})
		fencedAt = clk.Now()
	}()
	driveUntil(t, clk, 50*time.Millisecond, done)
	if fenceErr != nil {
		t.Fatal(fenceErr)
	}
	if min := epoch.Add(3500 * time.Millisecond); fencedAt.Before(min) {
		t.Fatalf("fenced at %v, before lease expiry plus margin %v", fencedAt.Sub(epoch), min.Sub(epoch))
	}
	if max := epoch.Add(4 * time.Second); fencedAt.After(max) {
		t.Fatalf("fenced at %v, long after expiry plus margin", fencedAt.Sub(epoch))
	}
}

func TestLeaseFencerRenewedLeaseIsNotFenced(t *testing.T) {
	clk := clock.NewFake(epoch)
	leases := &fakeLeases{clk: clk, expires: map[int64]time.Time{7: epoch.Add(time.Hour)}}
	f, err := fencing.NewLeaseFencer(fencing.LeaseConfig{Leases: leases, Margin: time.Second, MaxWait: 2 * time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var fenceErr error
	go func() {
		defer close(done)
		fenceErr = f.Fence(context.Background(), fencing.NodeRef{Name: "n1", Incarnation: "i", Key: 1, LeaseID: 7})
	}()
	driveUntil(t, clk, 100*time.Millisecond, done)
	if !errors.Is(fenceErr, fencing.ErrLeaseAlive) {
		t.Fatalf("live lease = %v, want ErrLeaseAlive", fenceErr)
	}
	leases.err = errors.New("etcd unavailable")
	err = f.Fence(context.Background(), fencing.NodeRef{Name: "n1", Incarnation: "i", Key: 1, LeaseID: 7})
	if !errors.Is(err, fencing.ErrFenceFailed) {
		t.Fatalf("etcd error = %v, want ErrFenceFailed", err)
	}
}

// scripted fails the first n calls with err.
type scripted struct {
	mu    sync.Mutex
	fails int
	err   error
	calls int
}

func (s *scripted) Fence(ctx context.Context, v fencing.NodeRef) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.calls <= s.fails {
		return fmt.Errorf("%w: attempt %d: %w", fencing.ErrFenceFailed, s.calls, s.err)
	}
	return nil
}

func TestRetryBacksOffThenSucceeds(t *testing.T) {
	clk := clock.NewFake(epoch)
	inner := &scripted{fails: 4, err: errors.New("switch unreachable")}
	reg := prometheus.NewRegistry()
	m, err := fencing.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var attempts []fencing.Attempt
	r, err := fencing.NewRetrying(fencing.RetryConfig{
		Fencer: inner, Backoff: fencing.Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond, Multiplier: 2},
		Clock: clk, Logger: testlog.New(t, "retry"),
		OnAttempt: func(a fencing.Attempt) { attempts = append(attempts, a); m.Observe(a) },
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var fenceErr error
	go func() {
		defer close(done)
		fenceErr = r.Fence(context.Background(), fencing.NewNodeRef("n1", "i", 0))
	}()
	driveUntil(t, clk, 10*time.Millisecond, done)
	if fenceErr != nil {
		t.Fatal(fenceErr)
	}
	var waits []time.Duration
	for _, a := range attempts {
		waits = append(waits, a.RetryIn)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond, 0}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Fatalf("back-off waits %v, want %v", waits, want)
	}
	if got := clk.Since(epoch); got != 1100*time.Millisecond {
		t.Fatalf("fenced after %v of fake time, want 1.1s", got)
	}
	if got := counterValue(t, m.Attempts().WithLabelValues("n1", "failure")); got != 4 {
		t.Fatalf("failure metric %v", got)
	}
	if got := counterValue(t, m.Attempts().WithLabelValues("n1", "success")); got != 1 {
		t.Fatalf("success metric %v", got)
	}
}

func TestRetryStopsOnNonRetriableAndContext(t *testing.T) {
	r, err := fencing.NewRetrying(fencing.RetryConfig{
		Fencer: fencing.FencerFunc(func(context.Context, fencing.NodeRef) error {
			return fmt.Errorf("leg0: %w", fencing.ErrFenced)
		}),
		Backoff: fencing.DefaultBackoff(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Fence(context.Background(), fencing.NewNodeRef("n1", "i", 0)); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("got %v", err)
	}

	clk := clock.NewFake(epoch)
	inner := &scripted{fails: 1 << 30, err: errors.New("down")}
	r, err = fencing.NewRetrying(fencing.RetryConfig{Fencer: inner, Backoff: fencing.DefaultBackoff(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = r.Fence(ctx, fencing.NewNodeRef("n1", "i", 0))
	}()
	// Let it fail a few times, then give up from outside.
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer bcancel()
	for {
		inner.mu.Lock()
		c := inner.calls
		inner.mu.Unlock()
		if c >= 3 {
			break
		}
		// The retry waits on the clock for its back-off.
		if err := clk.BlockUntilContext(bctx, 1); err != nil {
			t.Fatalf("no retries: %v", err)
		}
		clk.Advance(time.Second)
	}
	cancel()
	<-done
	if !errors.Is(err, fencing.ErrFenceFailed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled retry = %v", err)
	}
}

func TestChainAndAll(t *testing.T) {
	ctx := context.Background()
	v := fencing.NewNodeRef("n1", "i", 0)
	bad := &scripted{fails: 1 << 30, err: errors.New("pdu down")}
	good := &scripted{}
	c, err := fencing.NewChain(testlog.New(t, "chain"), fencing.Method{Name: "pdu", Fencer: bad}, fencing.Method{Name: "ipmi", Fencer: good})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Fence(ctx, v); err != nil {
		t.Fatalf("chain with one good method: %v", err)
	}
	c, _ = fencing.NewChain(nil, fencing.Method{Name: "pdu", Fencer: bad}, fencing.Method{Name: "pdu2", Fencer: bad})
	err = c.Fence(ctx, v)
	if !errors.Is(err, fencing.ErrFenceFailed) || !strings.Contains(err.Error(), "pdu2") {
		t.Fatalf("all-bad chain: %v", err)
	}
	self := fencing.FencerFunc(func(context.Context, fencing.NodeRef) error { return fencing.ErrFenced })
	good.calls = 0
	c, _ = fencing.NewChain(nil, fencing.Method{Name: "pr", Fencer: self}, fencing.Method{Name: "ipmi", Fencer: good})
	if err := c.Fence(ctx, v); !errors.Is(err, fencing.ErrFenced) || good.calls != 0 {
		t.Fatalf("chain after self fenced: %v (later method called %d times)", err, good.calls)
	}
	a, _ := fencing.NewAll(nil, fencing.Method{Name: "ipmi", Fencer: good}, fencing.Method{Name: "pdu", Fencer: bad})
	if err := a.Fence(ctx, v); !errors.Is(err, fencing.ErrFenceFailed) {
		t.Fatalf("All with a failing method: %v", err)
	}
	a, _ = fencing.NewAll(nil, fencing.Method{Name: "ipmi", Fencer: good}, fencing.Method{Name: "ipmi2", Fencer: good})
	if err := a.Fence(ctx, v); err != nil {
		t.Fatalf("All good: %v", err)
	}
	if _, err := fencing.NewChain(nil); err == nil {
		t.Fatal("empty chain accepted")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
