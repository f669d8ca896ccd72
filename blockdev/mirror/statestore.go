package mirror

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"
)

// LegStateStore keeps the cluster-wide copy of a volume's leg table, so a
// leg failed by one node is failed for all. The etcd-backed store lives in
// blockdev/mirror/etcdstate; MemStateStore is the in-memory twin.
type LegStateStore interface {
	// Load returns the stored table; ok is false when none is stored yet.
	Load(ctx context.Context, volume uuid.UUID) (t LegTable, ok bool, err error)
	// CompareAndSwap stores next if the stored generation is prev (0
	// meaning nothing stored yet); otherwise it returns ErrConflict and
	// changes nothing.
	CompareAndSwap(ctx context.Context, volume uuid.UUID, prev uint64, next LegTable) error
}

// MemStateStore is a LegStateStore in memory, shared by the volumes of one
// process. A volume given no store uses a private one, which makes the
// superblocks the only copy of the table.
type MemStateStore struct {
	mu     sync.Mutex
	tables map[uuid.UUID]LegTable
}

// NewMemStateStore returns an empty store.
func NewMemStateStore() *MemStateStore { return &MemStateStore{tables: map[uuid.UUID]LegTable{}} }

// Load implements LegStateStore.
func (s *MemStateStore) Load(ctx context.Context, volume uuid.UUID) (LegTable, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tables[volume]
	return t.Clone(), ok, nil
}

// CompareAndSwap implements LegStateStore.
func (s *MemStateStore) CompareAndSwap(ctx context.Context, volume uuid.UUID, prev uint64, next LegTable) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.tables[volume]
	if (ok && cur.Generation != prev) || (!ok && prev != 0) {
		return fmt.Errorf("%w: stored generation %d, expected %d", ErrConflict, cur.Generation, prev)
	}
	s.tables[volume] = next.Clone()
	return nil
}
