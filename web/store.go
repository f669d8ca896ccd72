package web

import (
	"context"
	"io/fs"
	"time"

	"github.com/shoal-ha/shoal/web/session"
)

// Store is the part of the shared store the web tier uses: reading through
// io/fs (close-to-open coherent across nodes: a file closed or renamed into
// place on one node is read whole and new by every node) and transactions
// of this node's journal slot, whose file changes and logged application
// records commit together or not at all.
type Store interface {
	fs.FS
	// Update runs fn as one transaction. An error from fn aborts it;
	// nothing of it is committed. An error of the store (a fenced node, a
	// failed device) may leave it committed or not: callers must look.
	Update(ctx context.Context, fn func(tx session.Tx) error) error
	// MkdirAll makes a directory and its parents (the Layout's).
	MkdirAll(name string, perm fs.FileMode) error
}

// RecoveryBounder is a Store that can bound a transaction's wait for a
// lock a dead node holds until its recovery ends: after wait the
// transaction fails with store.ErrRecovering and nothing is committed. The
// web tier answers such a request 503 with Retry-After (its retry is safe)
// instead of holding it for the whole recovery. A Store without it waits
// within the request's timeout.
type RecoveryBounder interface {
	UpdateRecoveryBound(ctx context.Context, wait time.Duration, fn func(tx session.Tx) error) error
}

// Membership tells who this node incarnation is and what the cluster knows
// about another one.
type Membership interface {
	// Self is this node's current incarnation.
	Self() session.Owner
	// State is the state of incarnation o: live, dead and not yet
	// recovered, or recovered.
	State(o session.Owner) session.OwnerState
}

// FileIdentity is what a store's fs.FileInfo.Sys() may offer so that ETags
// are derived from the file's identity instead of its content: a file
// replaced by rename is a new inode, and an inode rewritten in place gets a
// new generation.
type FileIdentity interface {
	Inode() uint64
	Generation() uint64
}
