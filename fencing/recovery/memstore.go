package recovery

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/shoal-ha/shoal/fencing"
)

// MemStore is the in-memory twin of EtcdStore: records, fence records,
// revoked leases and which coordinator is elected. Each coordinator talks
// to it through its own view (As), whose writes are refused once another
// coordinator is elected, as EtcdStore's guarded transactions are.
type MemStore struct {
	mu      sync.Mutex
	leader  string
	records map[string]Record
	fences  map[string]FenceRecord
	revoked []int64
	saves   int
	// afterSave, when set, sees every successful Save (under no lock).
	afterSave func(by string, rec Record)
}

// NewMemStore returns an empty store with no elected coordinator.
func NewMemStore() *MemStore {
	return &MemStore{records: map[string]Record{}, fences: map[string]FenceRecord{}}
}

// Elect makes coordinator the elected one; "" deposes everyone.
func (m *MemStore) Elect(coordinator string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leader = coordinator
}

// AfterSave sets a function called after every successful Save.
func (m *MemStore) AfterSave(fn func(by string, rec Record)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.afterSave = fn
}

// As returns the Store seen by coordinator.
func (m *MemStore) As(coordinator string) Store { return memView{m: m, as: coordinator} }

// Fences returns the fence records, by victim.
func (m *MemStore) Fences() map[string]FenceRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]FenceRecord{}
	for k, v := range m.fences {
		out[k] = v
	}
	return out
}

// Revoked lists the leases revoked so far, in order.
func (m *MemStore) Revoked() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int64(nil), m.revoked...)
}

type memView struct {
	m  *MemStore
	as string
}

func (v memView) Request(ctx context.Context, rec Record) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m := v.m
	m.mu.Lock()
	defer m.mu.Unlock()
	k := rec.Victim.String()
	if _, ok := m.records[k]; ok {
		return false, nil
	}
	m.records[k] = rec
	return true, nil
}

func (v memView) Load(ctx context.Context, victim fencing.NodeRef) (Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, false, err
	}
	m := v.m
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[victim.String()]
	return r, ok, nil
}

func (v memView) Save(ctx context.Context, rec Record, fence *FenceRecord) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := v.m
	m.mu.Lock()
	if m.leader != v.as {
		m.mu.Unlock()
		return fmt.Errorf("%w: %s is not the elected coordinator", ErrDeposed, v.as)
	}
	m.records[rec.Victim.String()] = rec
	if fence != nil {
		m.fences[rec.Victim.String()] = *fence
	}
	m.saves++
	after := m.afterSave
	m.mu.Unlock()
	if after != nil {
		after(v.as, rec)
	}
	return nil
}

func (v memView) RevokeLease(ctx context.Context, id int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := v.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked = append(m.revoked, id)
	return nil
}

func (v memView) List(ctx context.Context) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := v.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, 0, len(m.records))
	for _, r := range m.records {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Victim.String() < out[j].Victim.String() })
	return out, nil
}
