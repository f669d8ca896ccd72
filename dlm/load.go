package dlm

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// loadReplica prepares a replica to follow the cluster. It returns the
// replica, the revision its watch must start from and the revision it must
// reach before it is caught up.
//
// Grants are decided by the order of events, not stored, so a replica
// starts from the newest checkpoint and replays the events after it (or
// the whole history when there is no checkpoint yet). When no request
// exists at all the table's state is fully described by the member and
// value-block keys (recovery writes invalid value blocks back to etcd),
// and the replica starts from them instead, with a watch at the current
// revision. When etcd has compacted the history the replay needs, the
// reader asks the live nodes for a checkpoint now (requestCheckpoint)
// instead of waiting for the next periodic one.
func loadReplica(ctx context.Context, cli *clientv3.Client, prefix string) (rep *Replica, from, target int64, err error) {
	for range 3 {
		rep, from, target, err = loadReplicaOnce(ctx, cli, prefix)
		if !errors.Is(err, errCheckpointReplaced) {
			break
		}
	}
	return rep, from, target, err
}

// loadReplicaOnce is loadReplica's one try: it fails with
// errCheckpointReplaced when a newer checkpoint replaced the one it read
// meanwhile.
func loadReplicaOnce(ctx context.Context, cli *clientv3.Client, prefix string) (rep *Replica, from, target int64, err error) {
	rep = NewReplica(prefix)
	k := rep.keys
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(k.reqs(), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(k.members(), clientv3.WithPrefix()),
		clientv3.OpGet(k.lvbs(), clientv3.WithPrefix()),
		clientv3.OpGet(k.checkpoint()),
	).Commit()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("dlm: reading the lock table: %w", err)
	}
	target = resp.Header.Revision
	if resp.Responses[0].GetResponseRange().Count > 0 {
		from = 1
		if cp := resp.Responses[3].GetResponseRange().Kvs; len(cp) == 1 {
			if rep, err = checkpointReplica(ctx, cli, prefix, cp[0].Value, target); err != nil {
				return nil, 0, 0, err
			}
			from = rep.Table.Revision() + 1
		}
		if from <= target {
			_, err := cli.Get(ctx, k.checkpoint(), clientv3.WithRev(from), clientv3.WithCountOnly())
			switch {
			case errors.Is(err, rpctypes.ErrCompacted):
				if rep, err = requestCheckpoint(ctx, cli, prefix, target, from); err != nil {
					return nil, 0, 0, err
				}
				from = rep.Table.Revision() + 1
				target = max(target, rep.Table.Revision())
			case err != nil:
				return nil, 0, 0, fmt.Errorf("dlm: reading the lock table's history: %w", err)
			}
		}
		return rep, from, target, nil
	}
	var kvs []*mvccpb.KeyValue
	kvs = append(kvs, resp.Responses[1].GetResponseRange().Kvs...)
	kvs = append(kvs, resp.Responses[2].GetResponseRange().Kvs...)
	sort.SliceStable(kvs, func(i, j int) bool { return kvs[i].ModRevision < kvs[j].ModRevision })
	for _, kv := range kvs {
		if _, err := rep.Apply(&mvccpb.Event{Type: mvccpb.PUT, Kv: kv}); err != nil {
			return nil, 0, 0, err
		}
	}
	return rep, target + 1, target, nil
}

// requestCheckpoint asks the live nodes for a checkpoint of the lock table
// (a put of the want-checkpoint key, which every node's watch sees) and
// waits, within ctx, for one written after the request: history from
// revision needed on was compacted, so no older checkpoint will do. It
// fails with ErrCompacted when none comes.
func requestCheckpoint(ctx context.Context, cli *clientv3.Client, prefix string, after, needed int64) (*Replica, error) {
	k := newKeyspace(prefix)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cli.Watch(wctx, k.checkpoint(), clientv3.WithRev(after+1))
	put, err := cli.Put(ctx, k.checkpointRequest(), fmt.Sprintf("history from revision %d compacted", needed))
	if err != nil {
		return nil, fmt.Errorf("dlm: asking the nodes for a checkpoint (history from revision %d compacted): %w", needed, err)
	}
	for {
		select {
		case resp, ok := <-wch:
			if ok && resp.Err() == nil {
				for _, ev := range resp.Events {
					if ev.Type != mvccpb.PUT {
						continue
					}
					r, err := checkpointReplica(ctx, cli, prefix, ev.Kv.Value, ev.Kv.ModRevision)
					if errors.Is(err, errCheckpointReplaced) {
						continue // the newer one follows in the watch
					}
					if err != nil {
						return nil, err
					}
					if r.Table.Revision() >= put.Header.Revision {
						return r, nil
					}
				}
				continue
			}
			if ok && ctx.Err() == nil {
				return nil, fmt.Errorf("%w: history from revision %d is gone, and waiting for a new checkpoint failed: %v", ErrCompacted, needed, resp.Err())
			}
			<-ctx.Done()
			return nil, fmt.Errorf("%w: history from revision %d is gone, and no node answered the request for a new checkpoint: %w", ErrCompacted, needed, ctx.Err())
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: history from revision %d is gone, and no node answered the request for a new checkpoint: %w", ErrCompacted, needed, ctx.Err())
		}
	}
}

// LoadTable builds a read-only replica of the lock table at the current
// revision, for listings. It replays the DLM's history when locks exist.
func LoadTable(ctx context.Context, cli *clientv3.Client, prefix string) (*Replica, int64, error) {
	rep, from, target, err := loadReplica(ctx, cli, prefix)
	if err != nil {
		return nil, 0, err
	}
	if from > target {
		return rep, target, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cli.Watch(wctx, rep.keys.root(), clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	seen := from - 1
	for seen < target {
		if err := cli.RequestProgress(wctx); err != nil {
			return nil, 0, fmt.Errorf("dlm: replaying the lock table: %w", err)
		}
		select {
		case resp, ok := <-wch:
			if !ok {
				return nil, 0, fmt.Errorf("dlm: replaying the lock table: watch closed")
			}
			if err := resp.Err(); err != nil {
				if resp.CompactRevision != 0 {
					return nil, 0, fmt.Errorf("%w: replaying the lock table: history before revision %d compacted meanwhile (retry): %v", ErrCompacted, resp.CompactRevision, err)
				}
				return nil, 0, fmt.Errorf("dlm: replaying the lock table: %w", err)
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision > target {
					return rep, target, nil
				}
				_, _ = rep.Apply(ev)
				seen = ev.Kv.ModRevision
			}
			if resp.IsProgressNotify() && resp.Header.Revision > seen {
				seen = resp.Header.Revision
			}
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("dlm: replaying the lock table: %w", ctx.Err())
		}
	}
	return rep, target, nil
}
