package recovery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-ha/shoal/internal/attempt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Lease is the membership lease that carries a coordinator's leadership:
// the election key is attached to it, and leadership ends when Lost is
// closed. cluster.Session implements it; its owner keeps it alive.
//
// The coordinator never keeps the lease alive itself. A second keep-alive
// of the same lease (etcd's concurrency.Session) reports the lease gone
// whenever no renewal was answered for one TTL, for example across an etcd
// leader election, while the owner's lease is still valid: a coordinator
// deposed that way left its election key behind, attached to a live lease,
// and no other node could be elected.
type Lease interface {
	// LeaseID is the etcd lease the election key is attached to.
	LeaseID() clientv3.LeaseID
	// Lost is closed once the lease may no longer be trusted.
	Lost() <-chan struct{}
}

// election is one campaign for the coordinator role on a Lease: etcd's
// election recipe (the key with the lowest creation revision under the
// prefix leads), as concurrency.Election runs it, but without a keep-alive
// of its own.
type election struct {
	cli *clientv3.Client
	// ahead, when set, runs while the campaign waits for the key just
	// before its own, with that key's value, until the wait ends.
	ahead  func(ctx context.Context, holder string)
	prefix string // keys.Space.Coordinator() + "/"
	key    string
	rev    int64 // creation revision of key
}

// campaign puts this lease's key under prefix (or finds the one an earlier
// campaign of the same lease left) and waits until every key created
// before it is gone. On error the key is withdrawn when possible; a key
// that could not be withdrawn is found again by the next campaign on the
// same lease, so it never outlives the lease as a phantom leader.
func campaign(ctx context.Context, cli *clientv3.Client, electionPrefix string, lease Lease, val string, ahead func(ctx context.Context, holder string), changes attempt.LeaderChanges) (*election, error) {
	e := &election{cli: cli, prefix: electionPrefix + "/", ahead: ahead}
	e.key = fmt.Sprintf("%s%x", e.prefix, int64(lease.LeaseID()))
	// Each request is bounded (attemptTimeout, or a leader change): one
	// caught by an etcd leader election fails soon, and the caller
	// campaigns again.
	tctx, cancel := attempt.Context(ctx, attemptTimeout, changes)
	defer cancel()
	resp, err := cli.Txn(tctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.key), "=", 0)).
		Then(clientv3.OpPut(e.key, val, clientv3.WithLease(lease.LeaseID()))).
		Else(clientv3.OpGet(e.key)).
		Commit()
	if err != nil {
		return nil, fmt.Errorf("recovery: campaign: %w", err)
	}
	e.rev = resp.Header.Revision
	if !resp.Succeeded {
		kv := resp.Responses[0].GetResponseRange().Kvs[0]
		e.rev = kv.CreateRevision
		if string(kv.Value) != val {
			if _, err := cli.Put(tctx, e.key, val, clientv3.WithIgnoreLease()); err != nil {
				e.withdraw()
				return nil, fmt.Errorf("recovery: campaign: %w", err)
			}
		}
	}
	if err := e.waitPredecessors(ctx, lease); err != nil {
		e.withdraw()
		return nil, err
	}
	return e, nil
}

// waitPredecessors waits until no key created before e's is left, and
// checks that e's own key still stands (a revoked lease takes it away).
func (e *election) waitPredecessors(ctx context.Context, lease Lease) error {
	for {
		select {
		case <-lease.Lost():
			return fmt.Errorf("%w: lease lost while campaigning", ErrDeposed)
		default:
		}
		opts := append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(e.rev-1))
		gctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		resp, err := e.cli.Get(gctx, e.prefix, opts...)
		cancel()
		if err != nil {
			return fmt.Errorf("recovery: campaign: %w", err)
		}
		if len(resp.Kvs) == 0 {
			gctx, cancel := context.WithTimeout(ctx, attemptTimeout)
			own, err := e.cli.Get(gctx, e.key)
			cancel()
			if err != nil {
				return fmt.Errorf("recovery: campaign: %w", err)
			}
			if len(own.Kvs) == 0 || own.Kvs[0].CreateRevision != e.rev {
				return fmt.Errorf("%w: election key %s is gone", ErrDeposed, e.key)
			}
			return nil
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		if e.ahead != nil {
			holder := string(resp.Kvs[0].Value)
			go func() { defer close(done); e.ahead(wctx, holder) }()
		} else {
			close(done)
		}
		err = e.waitDelete(ctx, lease, string(resp.Kvs[0].Key), resp.Header.Revision)
		cancel()
		<-done
		if err != nil {
			return err
		}
	}
}

// waitDelete waits until key is deleted after rev, the lease is lost or
// the watch breaks (the caller then reads again).
func (e *election) waitDelete(ctx context.Context, lease Lease, key string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := e.cli.Watch(clientv3.WithRequireLeader(wctx), key, clientv3.WithRev(rev+1))
	for {
		select {
		case <-lease.Lost():
			return fmt.Errorf("%w: lease lost while campaigning", ErrDeposed)
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return nil
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return nil
				}
			}
		}
	}
}

// watchKey returns a channel closed when e's key is deleted (or recreated),
// until ctx ends.
func (e *election) watchKey(ctx context.Context) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		for ctx.Err() == nil {
			wch := e.cli.Watch(clientv3.WithRequireLeader(ctx), e.key, clientv3.WithRev(e.rev+1))
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != e.rev {
						close(gone)
						return
					}
				}
			}
			// The watch broke (no leader, say): look once, then watch
			// again from the current revision.
			resp, err := e.cli.Get(ctx, e.key)
			if err == nil && (len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != e.rev) {
				close(gone)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return gone
}

// withdraw deletes e's key if it is still the one this campaign created,
// within a bounded time; a failure is harmless (see campaign).
func (e *election) withdraw() error {
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTimeout)
	defer cancel()
	_, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.key), "=", e.rev)).
		Then(clientv3.OpDelete(e.key)).
		Commit()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("recovery: withdrawing election key %s: %w", e.key, err)
	}
	return err
}

// withdrawTimeout bounds the deletion of an election key on the way out
// (a stop without quorum waits this long; the key goes with the lease
// anyway).
const withdrawTimeout = time.Second

// SessionLease adapts an etcd concurrency.Session that owns its lease (a
// tool or a test that granted the lease for the coordinator alone) to a
// Lease: lost when the session's keep-alive ends. Not for a lease that a
// node's membership keeps alive: use the membership session itself.
func SessionLease(s *concurrency.Session) Lease { return sessionLease{s} }

type sessionLease struct{ s *concurrency.Session }

func (l sessionLease) LeaseID() clientv3.LeaseID { return l.s.Lease() }
func (l sessionLease) Lost() <-chan struct{}     { return l.s.Done() }
