package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/internal/attempt"
	"github.com/shoal-ha/shoal/internal/keys"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys under the cluster prefix (the keyspace is defined in internal/keys).
func recordKey(prefix string, v fencing.NodeRef) string {
	return keys.Of(prefix).Recovery(v.Name, v.Incarnation)
}
func fenceKey(prefix string, v fencing.NodeRef) string {
	return keys.Of(prefix).Fence(v.Name, v.Incarnation)
}

// EtcdStore keeps recovery records in etcd. Its writes are guarded by the
// coordinator's election key (set with Lead): once another coordinator is
// elected, they fail with ErrDeposed.
type EtcdStore struct {
	cli    *clientv3.Client
	prefix string

	changes attempt.LeaderChanges

	mu        sync.Mutex
	leaderKey string
	leaderRev int64
}

// NewEtcdStore returns a store under prefix (for example "/shoal").
// changes, when not nil, ends each request's attempt as soon as the etcd
// leader that cli's member follows changes (see attemptTimeout).
func NewEtcdStore(cli *clientv3.Client, prefix string, changes attempt.LeaderChanges) *EtcdStore {
	return &EtcdStore{cli: cli, prefix: strings.TrimRight(prefix, "/"), changes: changes}
}

// attemptTimeout bounds one etcd request of the store. A request caught by
// an etcd leader election is never answered (its member forwarded it to
// the dead leader); bounded, it fails soon, or at once when the member
// learns of the new leader (attempt.LeaderChanges), and its caller (the
// engine's back-off, RequestUntil) sends it again. Every request of the
// store is idempotent.
const attemptTimeout = time.Second

func (s *EtcdStore) attempt(ctx context.Context) (context.Context, context.CancelFunc) {
	return attempt.Context(ctx, attemptTimeout, s.changes)
}

// RequestUntil asks for rec's recovery like Request, sending the request
// again after each failed attempt (one caught by an etcd leader election,
// say: at once when the store follows leader changes) until it is
// recorded or ctx ends.
func (s *EtcdStore) RequestUntil(ctx context.Context, rec Record) (bool, error) {
	if err := ValidateVictim(rec.Victim); err != nil {
		return false, err
	}
	for {
		created, err := s.Request(ctx, rec)
		if err == nil || ctx.Err() != nil {
			return created, err
		}
		if errors.Is(err, attempt.ErrLeaderChanged) {
			continue
		}
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Lead makes Save require that the election key still has the creation
// revision it had when this coordinator won: concurrency.Election's Key()
// and Rev().
func (s *EtcdStore) Lead(key string, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaderKey, s.leaderRev = key, rev
}

// Unlead makes every later Save fail with ErrDeposed.
func (s *EtcdStore) Unlead() { s.Lead("", 0) }

// Request creates the record unless one exists.
func (s *EtcdStore) Request(ctx context.Context, rec Record) (bool, error) {
	if err := ValidateVictim(rec.Victim); err != nil {
		return false, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	k := recordKey(s.prefix, rec.Victim)
	ctx, cancel := s.attempt(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("recovery: requesting %s: %w", rec.Victim, attempt.Err(ctx, err))
	}
	return resp.Succeeded, nil
}

// Load reads victim's record.
func (s *EtcdStore) Load(ctx context.Context, victim fencing.NodeRef) (Record, bool, error) {
	ctx, cancel := s.attempt(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, recordKey(s.prefix, victim))
	if err != nil {
		return Record{}, false, fmt.Errorf("recovery: loading %s: %w", victim, err)
	}
	if len(resp.Kvs) == 0 {
		return Record{}, false, nil
	}
	var rec Record
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return Record{}, false, fmt.Errorf("recovery: record of %s: %w", victim, err)
	}
	return rec, true, nil
}

// Save writes rec (and fence) in one transaction guarded by leadership.
func (s *EtcdStore) Save(ctx context.Context, rec Record, fence *FenceRecord) error {
	s.mu.Lock()
	key, rev := s.leaderKey, s.leaderRev
	s.mu.Unlock()
	if key == "" {
		return fmt.Errorf("%w: not elected", ErrDeposed)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpPut(recordKey(s.prefix, rec.Victim), string(b))}
	if fence != nil {
		fb, err := json.Marshal(fence)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(fenceKey(s.prefix, rec.Victim), string(fb)))
	}
	ctx, cancel := s.attempt(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
		Then(ops...).
		Commit()
	if err != nil {
		return fmt.Errorf("recovery: saving %s: %w", rec.Victim, attempt.Err(ctx, err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: election key %s is gone or was re-created", ErrDeposed, key)
	}
	return nil
}

// RevokeLease revokes the lease; one already gone is fine.
func (s *EtcdStore) RevokeLease(ctx context.Context, id int64) error {
	ctx, cancel := s.attempt(ctx)
	defer cancel()
	_, err := s.cli.Revoke(ctx, clientv3.LeaseID(id))
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("recovery: revoking lease %x: %w", id, attempt.Err(ctx, err))
	}
	return nil
}

// List returns every record.
func (s *EtcdStore) List(ctx context.Context) ([]Record, error) {
	recs, _, err := list(ctx, s.cli, s.prefix)
	return recs, err
}

// List returns every recovery record under prefix, sorted by victim: the
// data behind `shoald status` and `lockctl ls`. Use InProgress to keep
// the unfinished ones.
func List(ctx context.Context, cli *clientv3.Client, prefix string) ([]Record, error) {
	recs, _, err := list(ctx, cli, strings.TrimRight(prefix, "/"))
	return recs, err
}

func list(ctx context.Context, cli *clientv3.Client, prefix string) ([]Record, int64, error) {
	resp, err := cli.Get(ctx, keys.Of(prefix).Recoveries(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("recovery: listing: %w", err)
	}
	recs := make([]Record, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec Record
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, 0, fmt.Errorf("recovery: record %s: %w", kv.Key, err)
		}
		recs = append(recs, rec)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Victim.String() < recs[j].Victim.String() })
	return recs, resp.Header.Revision, nil
}

// Fenced reports the fence record of victim, if it was fenced: a node
// that starts can check that its previous incarnation's fence is recorded.
func Fenced(ctx context.Context, cli *clientv3.Client, prefix string, victim fencing.NodeRef) (FenceRecord, bool, error) {
	resp, err := cli.Get(ctx, fenceKey(strings.TrimRight(prefix, "/"), victim))
	if err != nil {
		return FenceRecord{}, false, err
	}
	if len(resp.Kvs) == 0 {
		return FenceRecord{}, false, nil
	}
	var f FenceRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &f); err != nil {
		return FenceRecord{}, false, err
	}
	return f, true, nil
}

// Prune deletes the records of recoveries that finished before cutoff,
// with their fence records, and reports how many it deleted. Unfinished
// recoveries are never touched. Any node or tool may prune, elected or
// not: a finished record never changes, and each deletion is guarded on
// the record being the one that was read.
func Prune(ctx context.Context, cli *clientv3.Client, prefix string, cutoff time.Time) (int, error) {
	prefix = strings.TrimRight(prefix, "/")
	resp, err := cli.Get(ctx, keys.Of(prefix).Recoveries(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("recovery: pruning: %w", err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		var rec Record
		if err := json.Unmarshal(kv.Value, &rec); err != nil || !rec.Done() || !rec.Updated.Before(cutoff) {
			continue
		}
		k := string(kv.Key)
		tr, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(k), clientv3.OpDelete(fenceKey(prefix, rec.Victim))).
			Commit()
		if err != nil {
			return n, fmt.Errorf("recovery: pruning %s: %w", rec.Victim, err)
		}
		if tr.Succeeded {
			n++
		}
	}
	return n, nil
}
