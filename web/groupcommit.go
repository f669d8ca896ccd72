package web

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web/session"
)

// groupCommit runs the store work of concurrent requests in shared
// transactions (group commit): each request's step (journaling its intent,
// or applying it with its answer) is a function of a transaction, and the
// steps queued while earlier transactions commit go into one transaction
// together, so that one journal write and one flush carry many requests.
// Each step sees the effects of the steps before it in the same
// transaction, exactly as if they ran one after the other; a step refused
// by the engine (ErrNotOwner, ErrCorrupt: before it changed anything) is
// taken out and the transaction run again without it, so such a request
// never fails the others. An error of the store fails the transaction, and
// so every step in it.
//
// Steps come in lanes, and a transaction takes the steps of one lane: a
// request's Begin goes in the lane of its key's shard directory, whose
// lock it takes exclusively, when that lock may have to come from another
// node (a wait of a checkpoint and an etcd grant; API.beginLane). Mixed in
// one transaction, steps of k such shards would wait for up to k
// hand-overs one after the other, and an Apply step (which needs no
// shared lock) would wait for all of them; in lanes, the transactions
// wait side by side. Steps that wait for nobody share the common lane
// "", and one transaction's flush.
type groupCommit struct {
	st Store
	// maxJobs bounds the steps of one transaction; maxBatches the
	// transactions in flight at once: a transaction waiting for a lock
	// holds up only its own steps, and on a real cluster, where a
	// transaction mostly waits for the lock manager's etcd round trips,
	// one in flight at a time was slower than none grouped (measured:
	// benchweb -only cluster).
	maxJobs, maxBatches int
	// timeout bounds a transaction that runs past every deadline of its
	// steps' requests (RequestTimeout).
	timeout time.Duration

	mu       sync.Mutex
	queue    []*job
	inflight int
}

type job struct {
	ctx  context.Context
	lane string
	fn   func(tx session.Tx) error
	// recoveryWait, when positive, bounds the step's wait for a lock a
	// dead node holds (updateRecoveryBound).
	recoveryWait time.Duration
	err          error
	done         chan struct{}
}

// errStep marks a transaction given up because one of its steps failed.
var errStep = errors.New("web: a step of the transaction failed")

// ownError reports whether err is a step's own failure, decided before it
// changed anything (the engine's refusals), rather than the store's.
func ownError(err error) bool {
	return errors.Is(err, session.ErrNotOwner) || errors.Is(err, session.ErrCorrupt)
}

func newGroupCommit(st Store, timeout time.Duration) *groupCommit {
	return &groupCommit{st: st, maxJobs: 16, maxBatches: 4, timeout: timeout}
}

// update runs fn in a transaction shared with other requests' steps and
// returns its error, or the transaction's. Like Store.Update, fn may run
// more than once and must keep no effects outside tx; an error of the store
// may leave the step committed or not. A step whose ctx ended before its
// transaction started is not run (ctx.Err()).
func (g *groupCommit) update(ctx context.Context, fn func(tx session.Tx) error) error {
	return g.updateRecoveryBound(ctx, "", 0, fn)
}

// updateRecoveryBound is update in lane (shared only with steps of the
// same lane) whose wait for a lock a dead node holds lasts at most wait
// when the store can bound it (RecoveryBounder): then store.ErrRecovering,
// the step not committed. A transaction of several steps waits for such a
// lock an eighth of the shortest bound among them and then runs each step
// in a transaction of its own, so that steps that need no dead node's lock
// are not held up by one that does.
func (g *groupCommit) updateRecoveryBound(ctx context.Context, lane string, wait time.Duration, fn func(tx session.Tx) error) error {
	j := &job{ctx: ctx, lane: lane, fn: fn, recoveryWait: wait, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, j)
	g.startLocked()
	g.mu.Unlock()
	<-j.done
	return j.err
}

// startLocked starts a transaction for the queued steps when fewer than
// maxBatches are in flight: the oldest step and up to maxJobs-1 more of
// its lane, in the order they came.
func (g *groupCommit) startLocked() {
	if len(g.queue) == 0 || g.inflight >= g.maxBatches {
		return
	}
	lane := g.queue[0].lane
	var batch []*job
	rest := g.queue[:0]
	for _, j := range g.queue {
		if j.lane == lane && len(batch) < g.maxJobs {
			batch = append(batch, j)
		} else {
			rest = append(rest, j)
		}
	}
	clear(g.queue[len(rest):])
	g.queue = rest
	g.inflight++
	go g.run(batch)
}

func (g *groupCommit) run(batch []*job) {
	defer func() {
		g.mu.Lock()
		g.inflight--
		g.startLocked()
		g.mu.Unlock()
	}()
	live := batch[:0]
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil {
			j.err = err
			close(j.done)
			continue
		}
		live = append(live, j)
	}
	g.commit(live)
}

// commit runs the steps live in one transaction and ends each of them.
func (g *groupCommit) commit(live []*job) {
	for len(live) > 0 {
		ctx, cancel := g.context(live)
		var failed *job
		err := g.updateFor(live)(ctx, func(tx session.Tx) error {
			failed = nil
			for _, j := range live {
				err := j.fn(tx)
				switch {
				case err == nil:
				case ownError(err):
					failed, j.err = j, err
					return errStep
				default:
					// The store's (a lock taken out of order makes it
					// run the transaction again; a fenced node fails
					// it): the transaction's fate is every step's.
					return err
				}
			}
			return nil
		})
		cancel()
		if failed != nil && errors.Is(err, errStep) {
			// Nothing of the transaction was committed: the failed
			// step has its answer, the others run again without it.
			close(failed.done)
			rest := live[:0]
			for _, j := range live {
				if j != failed {
					rest = append(rest, j)
				}
			}
			live = rest
			continue
		}
		if errors.Is(err, store.ErrRecovering) && len(live) > 1 {
			// One of the steps needs a dead node's lock; nothing was
			// committed: each step alone, at once, with its own bound.
			var wg sync.WaitGroup
			for _, j := range live {
				wg.Go(func() { g.commit([]*job{j}) })
			}
			wg.Wait()
			return
		}
		if errors.Is(err, store.ErrConflict) && len(live) > 1 {
			// The steps together need more locks out of lock order
			// than the store starts a transaction over for; nothing
			// was committed: each half in a transaction of its own.
			half := len(live) / 2
			g.commit(live[:half:half])
			g.commit(live[half:])
			return
		}
		for _, j := range live {
			j.err = err
			close(j.done)
		}
		return
	}
}

// updateFor is the store's update for a transaction of the steps jobs:
// bounded in its waits for a dead node's locks when a step asks for a
// bound and the store can (an eighth of the shortest bound for several
// steps, the step's own for one), plain otherwise.
func (g *groupCommit) updateFor(jobs []*job) func(ctx context.Context, fn func(tx session.Tx) error) error {
	rb, ok := g.st.(RecoveryBounder)
	var wait time.Duration
	for _, j := range jobs {
		if j.recoveryWait > 0 && (wait == 0 || j.recoveryWait < wait) {
			wait = j.recoveryWait
		}
	}
	if !ok || wait == 0 {
		return g.st.Update
	}
	if len(jobs) > 1 {
		wait = max(wait/8, time.Millisecond)
	}
	return func(ctx context.Context, fn func(tx session.Tx) error) error {
		return rb.UpdateRecoveryBound(ctx, wait, fn)
	}
}

// context bounds a transaction by the latest deadline of its steps (none
// of them is cut before its own request's deadline), and at most timeout.
func (g *groupCommit) context(jobs []*job) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	var latest time.Time
	for _, j := range jobs {
		if d, ok := j.ctx.Deadline(); ok && d.After(latest) {
			latest = d
		}
	}
	if latest.IsZero() {
		return ctx, cancel
	}
	dctx, dcancel := context.WithDeadline(ctx, latest) // the earlier of the two
	return dctx, func() { dcancel(); cancel() }
}
