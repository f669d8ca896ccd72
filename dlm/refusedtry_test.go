package dlm

import (
	"errors"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestWaitAfterRefusedTryIsQueued: a try-lock refused while its creation
// is still unanswered (the refusal comes through the watch first), on a
// node lock whose last grant was EX, and then a plain request of the same
// node for PR before that answer. The refused request left no trace in
// the table, so the plain one must be asked for anew; taking the refused
// request for a pending EX that covers PR, the node used to wait for a
// grant that could never come.
func TestWaitAfterRefusedTryIsQueued(t *testing.T) {
	t.Parallel() // its own etcd member, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	a := startTestNode(t, c, 0, "a")
	b := startTestNode(t, c, 0, "b")
	ctx := ctxT(t, 30*time.Second)
	res := Named("refused-then-wait")
	l, err := a.n.Acquire(ctx, res, EX)
	if err != nil {
		t.Fatal(err)
	}
	l.Release() // cached EX: the node lock's last grant
	// a's answers come late from now on: its release (called back by b)
	// and its next creation are answered after the watch brought their
	// outcome.
	a.answerDelay.Store(int64(3 * time.Second))
	lb, err := b.n.Acquire(ctx, res, EX)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.n.Acquire(ctx, res, EX, Try()); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try while b holds EX: %v, want ErrWouldBlock", err)
	}
	a.n.mu.Lock()
	nl := a.n.locks[res.String()]
	busy := nl != nil && nl.busy
	a.n.mu.Unlock()
	if !busy {
		t.Fatal("the refused try's creation was answered already: this test no longer sets up the race")
	}
	got := make(chan error, 1)
	go func() {
		la, err := a.n.Acquire(ctx, res, PR)
		if err == nil {
			la.Release()
		}
		got <- err
	}()
	// The PR request queues while the creation is still unanswered.
	testutil.WaitFor(t, 10*time.Second, "the PR request queued", func() bool {
		a.n.mu.Lock()
		defer a.n.mu.Unlock()
		return len(nl.waiters) == 1
	})
	a.n.mu.Lock()
	busy = nl.busy
	a.n.mu.Unlock()
	a.answerDelay.Store(0)
	if !busy {
		t.Fatal("the refused try's creation was answered before the PR request queued: this test no longer sets up the race")
	}
	lb.Release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("PR request after a refused try not granted 15s after the holder released")
	}
	checkAll(t, a, b)
}
