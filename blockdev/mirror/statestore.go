package mirror

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/shoal-ha/shoal/blockdev"
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
// process.
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

// tableLocker is a store whose compare-and-swap only holds together with
// the superblock writes that follow it, under a lock.
type tableLocker interface {
	lockTable(ctx context.Context) (unlock func(), err error)
}

// superblockStore keeps the leg table in the legs' superblocks only; a
// volume given no Store uses it. Load reads every reachable leg and takes
// the newest generation; a compare-and-swap and the superblock writes that
// follow it hold a region lock in a namespace of their own, so processes
// sharing the legs (and a RegionLocker) change the table one at a time.
type superblockStore struct{ v *Volume }

func (s *superblockStore) devices() []blockdev.Device {
	seen := map[blockdev.Device]bool{}
	var out []blockdev.Device
	add := func(d blockdev.Device) {
		if d != nil && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	if w := s.v.view.Load(); w != nil {
		for _, d := range w.devs {
			add(d)
		}
	}
	for _, d := range s.v.given {
		add(d)
	}
	return out
}

// Load implements LegStateStore.
func (s *superblockStore) Load(ctx context.Context, volume uuid.UUID) (LegTable, bool, error) {
	var best LegTable
	found := false
	var lastErr error
	for _, d := range s.devices() {
		sb, err := readSuperblock(ctx, d)
		if err != nil {
			lastErr = err
			continue
		}
		if sb.Volume != volume {
			continue
		}
		if !found || sb.Table.Generation > best.Generation {
			best, found = sb.Table, true
		}
	}
	if !found && lastErr != nil {
		return best, false, fmt.Errorf("mirror: no readable superblock: %w", lastErr)
	}
	return best.Clone(), found, nil
}

// CompareAndSwap implements LegStateStore; the volume writes the
// superblocks itself right after.
func (s *superblockStore) CompareAndSwap(ctx context.Context, volume uuid.UUID, prev uint64, next LegTable) error {
	cur, ok, err := s.Load(ctx, volume)
	if err != nil {
		return err
	}
	if ok && cur.Generation != prev {
		return fmt.Errorf("%w: superblocks at generation %d, expected %d", ErrConflict, cur.Generation, prev)
	}
	return nil
}

func (s *superblockStore) lockTable(ctx context.Context) (func(), error) {
	lk, err := s.v.locker.LockRegion(ctx, RegionRequest{Volume: s.v.tableNS(), Off: 0, Length: 1, Exclusive: true})
	if err != nil {
		return nil, err
	}
	return lk.Release, nil
}
