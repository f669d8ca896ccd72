package dlm

import (
	"context"
	"fmt"
	"slices"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/attempt"
)

// DeadOwners lists the dead incarnations whose locks are still held for
// recovery (orphans), as this node's replica sees them.
func (n *Node) DeadOwners() []Owner {
	n.mu.Lock()
	defer n.mu.Unlock()
	holding := map[Owner]bool{}
	for _, e := range n.rep.Table.reqs {
		holding[e.Owner] = true
	}
	var out []Owner
	for _, o := range n.rep.Table.DeadOwners() {
		if holding[o] {
			out = append(out, o)
		}
	}
	return out
}

// Orphans lists the locks a dead incarnation still holds.
func (n *Node) Orphans(o Owner) []LockInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []LockInfo
	for _, l := range n.rep.Table.Locks() {
		if l.Owner == o {
			out = append(out, l)
		}
	}
	return out
}

// Orphaned reports whether a dead incarnation still holds a lock that
// overlaps res in a mode that conflicts with mode (an orphan, which only
// Recovery requests are granted over until ReleaseDead), as this node's
// replica sees it. A request for res in mode waits at least until the
// recovery ends. It does not block.
func (n *Node) Orphaned(res Resource, mode Mode) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.rep.Table.spaces[res.space()] {
		if e.held && e.orphan && e.Resource.Overlaps(res) && !Compatible(mode, e.granted) {
			return true
		}
	}
	return false
}

// WaitDead waits until this node's replica records o as dead (its member
// key vanished or was taken by a new incarnation). An incarnation that
// this replica never saw alive and that holds nothing in the table (it
// died before this node joined, or never locked anything) counts as dead
// once the replica has caught up with etcd's current revision.
func (n *Node) WaitDead(ctx context.Context, o Owner) error {
	resp, err := n.cfg.Client.Get(ctx, n.keys.members()+o.Node)
	if err != nil {
		return fmt.Errorf("dlm: waiting for %s to be dead: %w", o, err)
	}
	if err := n.waitRev(ctx, resp.Header.Revision); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		n.mu.Lock()
		n.revCond.Broadcast()
		n.mu.Unlock()
	})
	defer stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	for !n.deadLocked(o) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n.fenced != nil {
			return n.fenced
		}
		n.revCond.Wait()
	}
	return nil
}

// deadLocked reports, under mu, whether o is dead as far as the lock
// table is concerned.
func (n *Node) deadLocked(o Owner) bool {
	if n.rep.Table.Dead(o) {
		return true
	}
	if n.rep.Alive(o) {
		return false
	}
	for _, l := range n.rep.Table.Locks() {
		if l.Owner == o {
			return false
		}
	}
	return true
}

// ReleaseDead is called by the recovery coordinator once fencing and
// journal replay of dead incarnation o are done: it deletes o's remaining
// requests (its orphaned locks), so that waiters are granted, and records
// the release in etcd. The value blocks o invalidated are written back as
// invalid. It fails if o is not dead in this node's replica. Retrying is
// safe.
func (n *Node) ReleaseDead(ctx context.Context, o Owner) error {
	_, err := n.releaseDead(ctx, o, nil)
	return err
}

// ReleaseDeadRegions releases, ahead of ReleaseDead, dead incarnation o's
// locks on regions of the given volumes (Resource.Volume), and returns how
// many it released. The recovery coordinator calls it once the volume has
// no more use for them: after the resync of o's write-intent bitmap, when
// the legs agree on every region o marked and the checksum areas o cached
// are recomputed from the data. Waiters on those regions are granted at
// once, while o's other locks (the store's) stay orphaned until
// ReleaseDead. No release record is written: ReleaseDead still has to run.
// It fails if o is not dead in this node's replica. Retrying is safe.
func (n *Node) ReleaseDeadRegions(ctx context.Context, o Owner, volumes ...string) (int, error) {
	if len(volumes) == 0 {
		return 0, nil
	}
	return n.releaseDead(ctx, o, func(r Resource) bool { return r.IsRegion() && slices.Contains(volumes, r.Volume) })
}

// releaseDead is ReleaseDead (only nil) or ReleaseDeadRegions (only:
// which of o's locks to release).
func (n *Node) releaseDead(ctx context.Context, o Owner, only func(Resource) bool) (int, error) {
	n.mu.Lock()
	if err := n.alive(); err != nil {
		n.mu.Unlock()
		return 0, err
	}
	if !n.deadLocked(o) {
		n.mu.Unlock()
		return 0, fmt.Errorf("dlm: %s is not dead; only a dead incarnation's locks can be released", o)
	}
	var released, ids []string
	var invalid []clientv3.Op
	seen := map[string]bool{}
	for _, l := range n.rep.Table.Locks() {
		if l.Owner != o || (only != nil && !only(l.Resource)) {
			continue
		}
		released = append(released, l.Resource.String())
		ids = append(ids, l.ID)
		if _, valid := n.rep.Table.LVB(l.Resource); !valid && !seen[l.Resource.String()] {
			seen[l.Resource.String()] = true
			invalid = append(invalid, clientv3.OpPut(n.keys.lvb(l.Resource), mustJSON(lvbValue{Valid: false})))
		}
	}
	guard := n.guard()
	n.mu.Unlock()
	// The invalid value blocks go first, in transactions below etcd's
	// limit of operations per transaction (a node may hold thousands of
	// locks); the requests are deleted and the release recorded last, in
	// one transaction, so a retry after a failure finds them still there.
	if _, err := n.commitRecoveryBatches(ctx, guard, invalid); err != nil {
		return 0, fmt.Errorf("dlm: writing back the value blocks of %s: %w", o, err)
	}
	if only != nil {
		// A part of o's requests, deleted one by one: a retry finds the
		// ones not yet deleted.
		var dels []clientv3.Op
		for _, id := range ids {
			dels = append(dels, clientv3.OpDelete(id))
		}
		rev, err := n.commitRecoveryBatches(ctx, guard, dels)
		if err != nil {
			return 0, fmt.Errorf("dlm: releasing region locks of %s: %w", o, err)
		}
		if len(ids) == 0 {
			return 0, nil
		}
		n.log.Info("released region locks of dead incarnation", "owner", o, "locks", len(ids))
		return len(ids), n.waitRev(ctx, rev)
	}
	resp, err := n.commitRecovery(ctx, guard, []clientv3.Op{
		clientv3.OpDelete(n.keys.ownerReqs(o), clientv3.WithPrefix()),
		clientv3.OpPut(n.keys.recovered(o), mustJSON(recoveredValue{By: n.me.String(), Released: released})),
	})
	if err != nil {
		return 0, fmt.Errorf("dlm: releasing locks of %s: %w", o, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("dlm: releasing locks of %s: %w", o, ErrLeaseLost)
	}
	n.log.Info("released locks of dead incarnation", "owner", o, "locks", len(released))
	return len(released), n.waitRev(ctx, resp.Header.Revision)
}

// commitRecoveryBatches commits ops with commitRecovery in transactions
// below etcd's limit of operations per transaction, several at once (a
// dead node may hold thousands of region locks; the batches are
// independent and each is idempotent), and returns the highest revision
// among them (0 for no ops).
func (n *Node) commitRecoveryBatches(ctx context.Context, guard clientv3.Cmp, ops []clientv3.Op) (int64, error) {
	var batches [][]clientv3.Op
	for len(ops) > 0 {
		b := ops[:min(len(ops), maxTxnOps)]
		ops = ops[len(b):]
		batches = append(batches, b)
	}
	var (
		mu    sync.Mutex
		rev   int64
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, recoveryBatchesInFlight)
	for _, b := range batches {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			resp, err := n.commitRecovery(ctx, guard, b)
			if err == nil && !resp.Succeeded {
				err = ErrLeaseLost
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			rev = max(rev, resp.Header.Revision)
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return rev, nil
}

// recoveryBatchesInFlight bounds the release transactions sent at once.
const recoveryBatchesInFlight = 8

// commitRecovery commits one of ReleaseDead's idempotent transactions,
// each attempt bounded like a lock request write (WriteAttemptTimeout,
// doubling, or until the etcd leader changes) and sent again while
// attempts end unanswered (one caught by an etcd leader election never is)
// and ctx lasts. Any other error is returned: the recovery engine retries
// the step.
func (n *Node) commitRecovery(ctx context.Context, guard clientv3.Cmp, ops []clientv3.Op) (*clientv3.TxnResponse, error) {
	timeout := n.cfg.WriteAttemptTimeout
	for {
		actx, cancel := attempt.Context(ctx, timeout, n.cfg.LeaderChanges)
		resp, err := n.cfg.Client.Txn(actx).If(guard).Then(ops...).Commit()
		unanswered, changed := err != nil && actx.Err() != nil, err != nil && attempt.LeaderChanged(actx)
		cancel()
		n.etcdWrites.Add(1)
		if err == nil || ctx.Err() != nil || !unanswered {
			return resp, err
		}
		if !changed {
			n.log.Warn("releasing a dead incarnation's locks: write unanswered; sending it again", "bound", timeout)
			timeout = min(2*timeout, maxWriteAttempt)
		}
	}
}

// ForceRelease removes request id (a key under Prefix/dlm/req/) whose
// owner is no longer a live member, and records who did it under
// Prefix/dlm/forced/. It is the operator's tool for a lock left behind
// when recovery cannot run; it refuses requests of live members. The
// record is JSON of the released lock plus by.
func ForceRelease(ctx context.Context, cli *clientv3.Client, prefix, id, by string) (LockInfo, error) {
	rep, _, err := LoadTable(ctx, cli, prefix)
	if err != nil {
		return LockInfo{}, err
	}
	l, ok := rep.Table.Lock(id)
	if !ok {
		return LockInfo{}, fmt.Errorf("dlm: no request %q", id)
	}
	if rep.Alive(l.Owner) {
		return l, fmt.Errorf("dlm: owner %s of %s is a live member; only requests of owners that are gone can be force-released", l.Owner, id)
	}
	// An incarnation never comes back, and the request was written while
	// its owner was live (writes are guarded), so an owner that is not
	// alive in a replica holding the request is dead for good.
	k := newKeyspace(prefix)
	rec := mustJSON(struct {
		By   string   `json:"by"`
		Lock LockInfo `json:"lock"`
	}{by, l})
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(id), ">", 0)).
		Then(clientv3.OpDelete(id), clientv3.OpPut(k.forced(id), rec)).Commit()
	if err != nil {
		return l, err
	}
	if !resp.Succeeded {
		return l, fmt.Errorf("dlm: request %s vanished meanwhile", id)
	}
	return l, nil
}
