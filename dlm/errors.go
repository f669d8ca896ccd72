package dlm

import "errors"

// Errors returned by the lock manager. Test them with errors.Is.
var (
	// ErrLeaseLost means the node's lease is gone or its self-fence
	// deadline has passed: every lock the node held must be treated as
	// lost, and nothing protected by them may be touched any more. Retrying
	// on the same Node is never useful; a new incarnation (a new Node) may
	// acquire the locks again after recovery.
	ErrLeaseLost = errors.New("dlm: lease lost")
	// ErrWouldBlock is returned by a try-lock that could not be granted at
	// once. Nothing was queued; retrying later is safe.
	ErrWouldBlock = errors.New("dlm: lock would block")
	// ErrNotOwner means the caller used a lock handle it does not hold any
	// more (already released, or its node fenced). Retrying is not useful.
	ErrNotOwner = errors.New("dlm: lock not held by caller")
	// ErrDeadlock is returned to a waiter that asked to be told about
	// deadlocks when its request is part of a wait-for cycle that did not
	// resolve itself. Its request was withdrawn; retrying after releasing
	// other locks is safe.
	ErrDeadlock = errors.New("dlm: deadlock")
	// ErrBadMode reports an unknown lock mode or a mode not allowed for the
	// operation (for example a value block written under a read mode).
	ErrBadMode = errors.New("dlm: bad lock mode")
	// ErrBadResource reports a malformed resource name or byte range.
	ErrBadResource = errors.New("dlm: bad resource")
	// ErrClosed is returned after the Node was closed. Not retryable on
	// the same Node.
	ErrClosed = errors.New("dlm: node closed")
	// ErrCompacted means etcd compacted the lock table's history that a
	// joining node (or a listing) needed, and no newer checkpoint could
	// be had: no live node answered the request for one in time. Retrying
	// is safe once a node of the cluster runs.
	ErrCompacted = errors.New("dlm: lock table history compacted")
	// ErrUnknownRequest is returned by table operations that name a
	// request the table does not hold.
	ErrUnknownRequest = errors.New("dlm: unknown request")
)
