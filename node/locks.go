package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/keys"
)

// lockService runs the node's lock manager participant: one dlm.Node per
// incarnation, started when the incarnation registers and closed when it
// ends. While this node is the recovery coordinator it releases the locks
// of dead incarnations through the DLM's recovery gating.
type lockService struct {
	n   *cluster.Node
	log hclog.Logger
	// onAcquire, when set before the first incarnation, feeds the
	// lock-wait histogram.
	onAcquire func(dlm.Mode, time.Duration)

	mu   sync.Mutex
	node *dlm.Node
	// ready is closed when node is set; replaced when it is cleared.
	ready chan struct{}
}

func newLockService(n *cluster.Node) *lockService {
	return &lockService{n: n, log: n.Logger().Named("locks"), ready: make(chan struct{})}
}

// start joins the lock manager as incarnation s; nil when it could not.
func (l *lockService) start(ctx context.Context, s *cluster.Session) *dlm.Node {
	cfg := dlm.DefaultConfig()
	cfg.Client = l.n.Client()
	cfg.Member = s
	cfg.Prefix = l.n.Config().Prefix()
	cfg.Logger = l.log
	cfg.OnAcquire = l.onAcquire
	// A write caught by an etcd leader election is sent again as soon as
	// the member knows a new leader, and otherwise once a new leader can
	// have been elected, not after a long request timeout.
	cfg.WriteAttemptTimeout = 2 * l.n.Config().ElectionTimeout()
	cfg.LeaderChanges = l.n.LeaderChanges
	ctx, cancel := context.WithTimeout(ctx, l.n.Config().StartTimeout())
	defer cancel()
	d, err := dlm.Start(ctx, cfg)
	if err != nil {
		// Without its lock manager the node must not serve: a lost lease
		// makes Run register again, and the next incarnation retries.
		l.log.Error("lock manager did not start; this incarnation holds no locks", "error", err)
		return nil
	}
	l.mu.Lock()
	l.node = d
	close(l.ready)
	l.mu.Unlock()
	return d
}

// stop closes the incarnation's lock manager. On a clean stop it
// withdraws the node's lock requests (within the request timeout, while
// etcd has a quorum) and returns the error when it could not: the
// requests left behind are orphans that only this incarnation's recovery
// releases, so the caller must end the incarnation as a failed one (the
// lease left to expire), not as a departure nobody recovers.
func (l *lockService) stop(s *cluster.Session, clean bool) error {
	l.mu.Lock()
	d := l.node
	l.node = nil
	l.ready = make(chan struct{})
	l.mu.Unlock()
	if d == nil {
		return nil
	}
	// Without the lease or a quorum nothing can be withdrawn: do not wait
	// for it (the cluster releases the locks through recovery).
	wait := l.n.Config().RequestTimeout()
	if !clean {
		wait = 200 * time.Millisecond
	}
	tctx, tcancel := context.WithTimeout(context.Background(), wait)
	defer tcancel()
	// Nor when the quorum goes while this node stops (the whole cluster
	// stopping at once).
	ctx, cancel := l.n.WhileQuorum(tctx)
	defer cancel()
	if err := d.Close(ctx); err != nil && clean {
		return fmt.Errorf("withdrawing lock requests on shutdown: %w", err)
	}
	return nil
}

// running returns the current incarnation's lock manager, or nil, at once.
func (l *lockService) running() *dlm.Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.node
}

// current waits (bounded by ctx) for the lock manager of the current
// incarnation.
func (l *lockService) current(ctx context.Context) (*dlm.Node, error) {
	for {
		l.mu.Lock()
		d, ready := l.node, l.ready
		l.mu.Unlock()
		if d != nil {
			return d, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("lock manager not running: %w", ctx.Err())
		}
	}
}

// releaseDead is the recovery step that hands a dead incarnation's locks
// on: once the lock table sees the owner dead, its orphaned locks are
// released and the waiters granted. It is idempotent, and returns how
// many locks it released.
func (l *lockService) releaseDead(ctx context.Context, dead keys.MemberRecord) (int, error) {
	d, o, err := l.seenDead(ctx, dead)
	if err != nil {
		return 0, err
	}
	orphans := d.Orphans(o)
	if err := d.ReleaseDead(ctx, o); err != nil {
		return 0, err
	}
	return len(orphans), nil
}

// releaseDeadRegions releases a dead incarnation's region locks of the
// given lock namespaces ahead of its other locks (dlm ReleaseDeadRegions),
// once the lock table sees it dead, and returns how many it released. It
// is idempotent.
func (l *lockService) releaseDeadRegions(ctx context.Context, dead keys.MemberRecord, volumes []string) (int, error) {
	d, o, err := l.seenDead(ctx, dead)
	if err != nil {
		return 0, err
	}
	return d.ReleaseDeadRegions(ctx, o, volumes...)
}

// seenDead is this incarnation's lock manager once its lock table counts
// the dead incarnation dead (within 10 s), and that incarnation as an
// owner.
func (l *lockService) seenDead(ctx context.Context, dead keys.MemberRecord) (*dlm.Node, dlm.Owner, error) {
	o := dlm.Owner{Node: dead.Name, Incarnation: dead.Incarnation}
	d, err := l.current(ctx)
	if err != nil {
		return nil, o, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.WaitDead(wctx, o); err != nil {
		return nil, o, fmt.Errorf("waiting for the lock table to see %s dead: %w", o, err)
	}
	return d, o, nil
}
