package node

import (
	"context"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// A Part is a component that runs on each incarnation of the node, on top
// of the built-in ones (the store, the web tier). Parts given to Start are
// started, in order, after the lock manager, the volume and the detector,
// and stopped in the reverse order before them.
type Part interface {
	// Name names the part in logs.
	Name() string
	// Start starts the part on a new incarnation. An error abandons the
	// incarnation (the node registers again as a new one), so return one
	// only when the node must not serve without this part.
	Start(ctx context.Context, inc Incarnation) error
	// Stop stops the part. clean is false when the lease was lost: stop
	// I/O at once, others may already be recovering this incarnation;
	// true before a clean shutdown revokes the lease: finish in-flight
	// work first. Stop must return within the node's request timeout.
	Stop(clean bool)
}

// Unfinished is a Part whose clean Stop can leave work that only a
// recovery of the incarnation finishes (the store's committed blocks that
// the volume would not take in place: their locks must not be handed on
// before a journal replay). LeftUnfinished, asked after Stop(true), says
// so with an error; the node then stops the rest as after a lost lease
// (the lock manager and the volume hand nothing on) and leaves the lease
// to expire, so that the cluster fences and recovers the incarnation.
type Unfinished interface {
	LeftUnfinished() error
}

// Mounter is a Part with admin HTTP routes, mounted once when the node
// starts (before the first incarnation): a route finds the current
// incarnation through the part's own state and answers 503 between
// incarnations.
type Mounter interface {
	Mount(a *cluster.AdminServer)
}

// Replayer is a Part with a journal of its own: the recovery coordinator
// calls Replay in the replay step of a dead incarnation's recovery
// (fencing/recovery's order: fence, record, resync, replay, release), on
// the coordinator's own incarnation. Replay must be idempotent: a new
// coordinator repeats the step after a coordinator dies mid-replay.
type Replayer interface {
	Replay(ctx context.Context, victim fencing.NodeRef, inc Incarnation) error
}

// ReplayWaiter is the optional ability of a Replayer to say what its
// running replay waits for: the recovery's reports on a replay step that
// runs past recovery.Config.StepReportAfter list these (the lock, its
// holders, the phase of the replay). It must not block.
type ReplayWaiter interface {
	ReplayWaits(victim fencing.NodeRef) []recovery.Wait
}

// Incarnation is what a part may use of the node's current incarnation.
type Incarnation struct {
	// Session is the incarnation's lease and member key.
	Session *cluster.Session
	// Locks is the incarnation's lock manager.
	Locks *dlm.Node
	// Volume is the shared volume; nil when the node has none.
	Volume *mirror.Volume
}
