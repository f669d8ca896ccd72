// Package attempt bounds one attempt at an etcd request and ends it early
// when the etcd leader changes.
//
// A write that an etcd member forwards to a leader that then dies is never
// answered: the member does not forward it again to the next leader (raft
// drops a proposal it has handed on). The writer must give the attempt up
// and send the request again. Waiting out a fixed bound costs that bound
// on every failover of the leader's host; the member knows when a new
// leader serves (etcdserver.EtcdServer.LeaderChangedNotify), so an attempt
// caught by the election is sent again at once.
//
// Only idempotent requests may be sent again: a request given up may still
// have been committed.
//
//	ctx, cancel := attempt.Context(parent, time.Second, changes)
//	resp, err := cli.Txn(ctx)...Commit()
//	cancel()
//	if attempt.LeaderChanged(ctx) { /* send again now, no back-off */ }
package attempt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// LeaderChanges returns a channel that is closed at the next change of the
// etcd leader that the caller's etcd member follows (a new leader known,
// not the old one lost). It is called once per attempt, before the request
// is sent, so that a change while the request is in flight closes the
// channel the attempt waits on. A nil LeaderChanges, or a nil channel,
// gives no such signal (a client of an external etcd cluster): the
// attempt then ends only at its bound.
type LeaderChanges func() <-chan struct{}

// ErrLeaderChanged is the cause of an attempt's context ended by a leader
// change: the request may or may not have been committed; sending an
// idempotent request again at once is safe.
var ErrLeaderChanged = errors.New("etcd leader changed while the request was in flight")

// Context returns the context of one attempt: it ends when parent ends,
// after timeout, or when changes signals a new leader (with cause
// ErrLeaderChanged). Call cancel once the attempt is done.
func Context(parent context.Context, timeout time.Duration, changes LeaderChanges) (context.Context, context.CancelFunc) {
	ctx, cancelTimeout := context.WithTimeout(parent, timeout)
	var ch <-chan struct{}
	if changes != nil {
		ch = changes()
	}
	if ch == nil {
		return ctx, cancelTimeout
	}
	ctx, cancelCause := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			cancelCause(ErrLeaderChanged)
		case <-ctx.Done():
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() { close(done) })
		cancelCause(context.Canceled)
		cancelTimeout()
	}
}

// LeaderChanged reports whether ctx (from Context) ended because the
// leader changed.
func LeaderChanged(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), ErrLeaderChanged)
}

// Err returns err, the error of a request sent with ctx (from Context),
// also matching ErrLeaderChanged when the attempt ended because the
// leader changed, so that the caller can send it again at once.
func Err(ctx context.Context, err error) error {
	if err != nil && LeaderChanged(ctx) {
		return fmt.Errorf("%w: %w", ErrLeaderChanged, err)
	}
	return err
}
