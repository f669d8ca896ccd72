// Package etcdstate keeps a mirror volume's leg table in etcd, the
// cluster's configuration database, so that a leg failed by one node is
// failed for every node.
//
// Usage:
//
//	cli, _ := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
//	cfg := mirror.DefaultConfig(slot)
//	cfg.Store = etcdstate.New(cli, "/shoal")
//	vol, err := mirror.Open(ctx, cfg)
package etcdstate

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/internal/keys"
)

// Store is a mirror.LegStateStore on etcd. The table of volume V lives
// under <prefix>/volumes/V/legs as JSON; compare-and-swap is an etcd
// transaction on the stored generation's mod revision.
type Store struct {
	cli    *clientv3.Client
	prefix string
}

// New returns a store using cli under prefix.
func New(cli *clientv3.Client, prefix string) *Store { return &Store{cli: cli, prefix: prefix} }

type record struct {
	Table    mirror.LegTable `json:"table"`
	Revision int64           `json:"-"`
}

// Key is where volume's table lives.
func (s *Store) Key(volume uuid.UUID) string {
	return keys.Of(s.prefix).VolumeLegs(volume.String())
}

func (s *Store) get(ctx context.Context, volume uuid.UUID) (record, bool, error) {
	resp, err := s.cli.Get(ctx, s.Key(volume))
	if err != nil {
		return record{}, false, fmt.Errorf("etcdstate: get %s: %w", s.Key(volume), err)
	}
	if len(resp.Kvs) == 0 {
		return record{}, false, nil
	}
	var r record
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return record{}, false, fmt.Errorf("etcdstate: decode %s: %w", s.Key(volume), err)
	}
	if err := r.Table.Validate(); err != nil {
		return record{}, false, fmt.Errorf("etcdstate: %s: %w", s.Key(volume), err)
	}
	r.Revision = resp.Kvs[0].ModRevision
	return r, true, nil
}

// Load implements mirror.LegStateStore.
func (s *Store) Load(ctx context.Context, volume uuid.UUID) (mirror.LegTable, bool, error) {
	r, ok, err := s.get(ctx, volume)
	return r.Table, ok, err
}

// CompareAndSwap implements mirror.LegStateStore.
func (s *Store) CompareAndSwap(ctx context.Context, volume uuid.UUID, prev uint64, next mirror.LegTable) error {
	cur, ok, err := s.get(ctx, volume)
	if err != nil {
		return err
	}
	var cmp clientv3.Cmp
	switch {
	case ok && cur.Table.Generation != prev, !ok && prev != 0:
		return fmt.Errorf("%w: stored generation %d, expected %d", mirror.ErrConflict, cur.Table.Generation, prev)
	case ok:
		cmp = clientv3.Compare(clientv3.ModRevision(s.Key(volume)), "=", cur.Revision)
	default:
		cmp = clientv3.Compare(clientv3.CreateRevision(s.Key(volume)), "=", 0)
	}
	val, err := json.Marshal(record{Table: next})
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(s.Key(volume), string(val))).Commit()
	if err != nil {
		return fmt.Errorf("etcdstate: put %s: %w", s.Key(volume), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s changed concurrently", mirror.ErrConflict, s.Key(volume))
	}
	return nil
}
