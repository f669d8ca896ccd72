package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// scriptedRole ends each Run with the next error of its script, then
// blocks until ctx ends.
type scriptedRole struct {
	runs chan int
	errs []error
	n    int
}

func (r *scriptedRole) Run(ctx context.Context, _ *Session) error {
	r.n++
	r.runs <- r.n
	if r.n <= len(r.errs) {
		return r.errs[r.n-1]
	}
	<-ctx.Done()
	return ctx.Err()
}

func (r *scriptedRole) Leading() bool { return false }

func waitPendingTimers(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func nextRun(t *testing.T, runs <-chan int) int {
	t.Helper()
	select {
	case n := <-runs:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("the role was not run again")
		return 0
	}
}

// TestCampaignRestartsWhileLeaseValid: a coordinator campaign that ends
// while the lease is valid (the election key lost, an etcd error) is run
// again after a short pause, growing while it keeps failing; a lost lease
// or a stop ends the campaigning.
func TestCampaignRestartsWhileLeaseValid(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	role := &scriptedRole{runs: make(chan int, 4), errs: []error{errors.New("deposed: election key gone"), errors.New("etcdserver: request timed out")}}
	ctx, cancel := context.WithCancel(context.Background())
	lost := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		campaignWhileValid(ctx, role, nil, lost, clk, testlog.New(t, "node"))
	}()
	if n := nextRun(t, role.runs); n != 1 {
		t.Fatalf("run %d", n)
	}
	waitPendingTimers(t, clk, 1)
	clk.Advance(199 * time.Millisecond)
	select {
	case <-role.runs:
		t.Fatal("run again before the pause")
	default:
	}
	clk.Advance(time.Millisecond)
	if n := nextRun(t, role.runs); n != 2 {
		t.Fatalf("run %d", n)
	}
	waitPendingTimers(t, clk, 1)
	clk.Advance(400 * time.Millisecond)
	if n := nextRun(t, role.runs); n != 3 {
		t.Fatalf("run %d", n)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("campaigning did not stop with ctx")
	}

	// A lost lease ends it after the run that saw it.
	role = &scriptedRole{runs: make(chan int, 4), errs: []error{errors.New("deposed: lease lost")}}
	close(lost)
	done = make(chan struct{})
	go func() {
		defer close(done)
		campaignWhileValid(context.Background(), role, nil, lost, clk, testlog.New(t, "node"))
	}()
	nextRun(t, role.runs)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("campaigning went on after the lease was lost")
	}
}
