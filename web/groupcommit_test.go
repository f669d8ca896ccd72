package web

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web/session"
)

// gatedStore holds every transaction until the test lets it go, counts
// transactions, and can refuse the ones with more than conflictOver steps
// as the store does when they need too many locks out of order.
type gatedStore struct {
	Store
	gate         chan struct{} // a transaction takes one token to run
	txs, steps   atomic.Int64
	conflictOver int
	fail         error // every commit fails with it
}

func (s *gatedStore) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	select {
	case <-s.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.txs.Add(1)
	return s.Store.Update(ctx, func(tx session.Tx) error {
		n := 0
		err := fn(countingTx{tx, &n})
		if err != nil {
			return err
		}
		if s.conflictOver > 0 && n > s.conflictOver {
			return store.ErrConflict
		}
		s.steps.Add(int64(n))
		return s.fail
	})
}

// countingTx counts the files written (one per step in these tests).
type countingTx struct {
	session.Tx
	n *int
}

func (c countingTx) WriteFile(name string, data []byte, perm fs.FileMode) error {
	*c.n++
	return c.Tx.WriteFile(name, data, perm)
}

// Steps queued while a transaction runs share the next one, see each
// other's effects in order, and each gets its own outcome.
func TestGroupCommitSharesTransactions(t *testing.T) {
	c := newCluster()
	st := &gatedStore{Store: c.vol.Node(1), gate: make(chan struct{})}
	g := newGroupCommit(st, 10*time.Second)
	g.maxBatches = 1 // the steps queue behind the first
	ctx := context.Background()
	// The first step holds the only transaction slot at the gate.
	first := make(chan error, 1)
	go func() {
		first <- g.update(ctx, func(tx session.Tx) error { return tx.WriteFile("n", []byte("0"), 0o600) })
	}()
	testutil.WaitFor(t, 10*time.Second, "the first transaction to start", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.inflight == 1
	})
	// Ten more queue behind it: each appends to the file it reads.
	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n+1)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.update(ctx, func(tx session.Tx) error {
				b, err := tx.ReadFile("n")
				if err != nil {
					return err
				}
				if i == 5 {
					return session.ErrNotOwner // refused: taken out, others unharmed
				}
				return tx.WriteFile("n", append(b, '+'), 0o600)
			})
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "the steps to queue", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.queue) == n
	})
	close(st.gate) // every transaction may run now
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := 1; i <= n; i++ {
		if want := error(nil); i == 5 {
			if !errors.Is(errs[i], session.ErrNotOwner) {
				t.Errorf("step %d: %v, want ErrNotOwner", i, errs[i])
			}
		} else if errs[i] != want {
			t.Errorf("step %d: %v", i, errs[i])
		}
	}
	b, err := fs.ReadFile(c.vol.Node(2), "n")
	if err != nil || string(b) != "0+++++++++" {
		t.Fatalf("file %q %v, want 0 and nine +", b, err)
	}
	// The first alone, then the ten together (run again once without the
	// refused one): the refused step's transaction never committed.
	if got := st.txs.Load(); got != 3 {
		t.Fatalf("%d transactions, want 3", got)
	}
}

// A transaction the store refuses for its locks is split until it fits; a
// failed commit fails every step in it; a step whose request's deadline
// passed before its transaction is not run.
func TestGroupCommitSplitsAndFails(t *testing.T) {
	c := newCluster()
	st := &gatedStore{Store: c.vol.Node(1), gate: make(chan struct{}), conflictOver: 3}
	g := newGroupCommit(st, 10*time.Second)
	g.maxBatches = 1
	ctx := context.Background()
	block := make(chan error, 1)
	go func() { block <- g.update(ctx, func(tx session.Tx) error { return nil }) }()
	testutil.WaitFor(t, 10*time.Second, "the first transaction to start", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.inflight == 1
	})
	expired, cancel := context.WithCancel(ctx)
	cancel()
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ctx
			if i == 0 {
				c = expired
			}
			errs[i] = g.update(c, func(tx session.Tx) error { return tx.WriteFile(fmt.Sprintf("f%d", i), []byte("x"), 0o600) })
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "the steps to queue", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.queue) == len(errs)
	})
	close(st.gate)
	wg.Wait()
	<-block
	if !errors.Is(errs[0], context.Canceled) {
		t.Fatalf("expired step: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
		if _, err := fs.Stat(c.vol.Node(2), fmt.Sprintf("f%d", i+1)); err != nil {
			t.Fatalf("step %d not committed: %v", i+1, err)
		}
	}
	if _, err := fs.Stat(c.vol.Node(2), "f0"); err == nil {
		t.Fatal("the expired step ran")
	}
	if st.steps.Load() != 11 {
		t.Fatalf("%d steps committed, want 11", st.steps.Load())
	}

	// A commit that fails fails each of its steps.
	st.fail = errors.New("injected: device gone")
	err := g.update(ctx, func(tx session.Tx) error { return tx.WriteFile("g", []byte("x"), 0o600) })
	if !errors.Is(err, st.fail) {
		t.Fatalf("failed commit: %v", err)
	}
}

// A transaction takes the steps of one lane only: the oldest queued step's
// lane, then that of the oldest left, and so on.
func TestGroupCommitKeepsLanesApart(t *testing.T) {
	c := newCluster()
	st := &gatedStore{Store: c.vol.Node(1), gate: make(chan struct{})}
	g := newGroupCommit(st, 10*time.Second)
	g.maxBatches = 1
	ctx := context.Background()
	var mu sync.Mutex
	lanesOf := map[int64][]string{} // transaction (st.txs when it ran) -> lanes of its steps
	step := func(lane string, i int) func(tx session.Tx) error {
		return func(tx session.Tx) error {
			mu.Lock()
			n := st.txs.Load()
			lanesOf[n] = append(lanesOf[n], lane)
			mu.Unlock()
			return tx.WriteFile(fmt.Sprintf("%s-%d", lane, i), []byte(lane), 0o600)
		}
	}
	first := make(chan error, 1)
	go func() { first <- g.updateRecoveryBound(ctx, "a", 0, step("a", 0)) }()
	testutil.WaitFor(t, 10*time.Second, "the first transaction to start", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.inflight == 1
	})
	lanes := []string{"a", "b", "a", "b", "c", "a"}
	var wg sync.WaitGroup
	errs := make([]error, len(lanes))
	for i, lane := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.updateRecoveryBound(ctx, lane, 0, step(lane, i+1))
		}()
		testutil.WaitFor(t, 10*time.Second, "the step to queue", func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			return len(g.queue) == i+1
		})
	}
	close(st.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := map[int64][]string{1: {"a"}, 2: {"a", "a", "a"}, 3: {"b", "b"}, 4: {"c"}}
	if fmt.Sprint(lanesOf) != fmt.Sprint(want) {
		t.Fatalf("lanes of each transaction: %v, want %v", lanesOf, want)
	}
}
