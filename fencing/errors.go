package fencing

import "errors"

// Errors returned by fencers. Each says whether trying again is safe.
var (
	// ErrFenceFailed: the victim could not be cut off from storage. It may
	// still be writing, so recovery must not go on. Fencing is idempotent:
	// retrying is always safe, and is what the retry wrapper does.
	ErrFenceFailed = errors.New("fencing: fence failed")

	// ErrFenced: this node's own registration is gone from a leg, so the
	// cluster fenced it. Not retriable: the node must stop all volume I/O
	// and rejoin as a new incarnation with a new key.
	ErrFenced = errors.New("fencing: this node has been fenced")

	// ErrFenceSelf: a node was asked to fence itself (the victim's key is
	// this node's own key). Not retriable: it is a caller bug.
	ErrFenceSelf = errors.New("fencing: refusing to fence own key")

	// ErrNoReservationLegs: a reservation fencer has no leg that supports
	// persistent reservations, so it cannot fence anyone. Not retriable
	// until the leg set changes; configure lease-only mode instead.
	ErrNoReservationLegs = errors.New("fencing: no leg supports persistent reservations")

	// ErrReservationMismatch: a leg holds a reservation of a type other
	// than Write Exclusive - Registrants Only, placed by something outside
	// Shoal. Not retriable until an operator clears it.
	ErrReservationMismatch = errors.New("fencing: leg holds a foreign reservation type")

	// ErrAgentTimeout: a fence agent did not finish within its timeout and
	// was killed. The victim's state is unknown; retrying is safe.
	ErrAgentTimeout = errors.New("fencing: fence agent timed out")

	// ErrLeaseAlive: the victim's lease was still being renewed when the
	// wait ended, so lease-only fencing cannot vouch for it. Retrying
	// (waiting longer) is safe; recovering the node is not.
	ErrLeaseAlive = errors.New("fencing: victim lease still alive")
)
