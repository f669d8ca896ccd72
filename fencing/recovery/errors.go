package recovery

import "errors"

// Errors of the recovery engine. Each says whether a retry is safe.
var (
	// ErrDeposed: this coordinator is no longer the elected one, so its
	// write to the recovery record was refused. Not retriable here: the
	// new coordinator resumes the recovery from its last recorded step.
	ErrDeposed = errors.New("recovery: coordinator deposed")

	// ErrOutOfOrder: a step was reported finished before the step ahead of
	// it. A caller bug; never retry.
	ErrOutOfOrder = errors.New("recovery: step out of order")

	// ErrSelfSuspected: a recovery of this very incarnation was requested:
	// the other nodes consider it dead and will fence it. Not retriable:
	// the node must stop all volume I/O and rejoin as a new incarnation.
	ErrSelfSuspected = errors.New("recovery: this incarnation is being recovered")

	// ErrSelfFenced: the coordinator found that it was itself fenced
	// while fencing the victim. Not retriable on this incarnation: the
	// node must stop I/O and rejoin.
	ErrSelfFenced = errors.New("recovery: coordinator itself fenced")
)
