package dlm

import (
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member is the node incarnation that owns locks: the daemon's membership
// layer provides it. Locks live as long as the incarnation's etcd lease.
type Member interface {
	// Name is the node's stable name (for example "node1").
	Name() string
	// Incarnation identifies this run of the node; it changes on every
	// restart and every re-registration after a lost lease.
	Incarnation() string
	// LeaseID is the etcd lease that carries this incarnation's liveness.
	LeaseID() clientv3.LeaseID
	// MemberKey is the etcd key, attached to LeaseID, whose presence proves
	// the incarnation is alive. Writes that must come from a live owner are
	// guarded by a comparison on this key.
	MemberKey() string
	// Deadline is the self-fence deadline on this node's own clock: the
	// last moment at which the incarnation may still trust its lease. It
	// moves forward with every successful keep-alive.
	Deadline() time.Time
	// Lost is closed when the incarnation has lost its lease (or was shut
	// down); every lock it held must be treated as gone.
	Lost() <-chan struct{}
}
