package recovery

import (
	"context"

	"github.com/shoal-ha/shoal/fencing"
)

// Store keeps recovery records: etcd in the daemon (EtcdStore), memory in
// tests (MemStore).
type Store interface {
	// Request creates the record of victim's recovery unless one exists.
	// Any node may request; it needs no leadership. created is false when
	// the record was already there.
	Request(ctx context.Context, rec Record) (created bool, err error)
	// Load returns victim's record; ok is false when there is none.
	Load(ctx context.Context, victim fencing.NodeRef) (rec Record, ok bool, err error)
	// Save writes rec, and fence with it in the same transaction when
	// non-nil, only while this store's coordinator is the elected one;
	// otherwise it fails with ErrDeposed and writes nothing.
	Save(ctx context.Context, rec Record, fence *FenceRecord) error
	// RevokeLease revokes an etcd lease; a lease already gone is not an
	// error.
	RevokeLease(ctx context.Context, leaseID int64) error
	// List returns every record, finished or not.
	List(ctx context.Context) ([]Record, error)
}
