package fencing

import "context"

// Fencer cuts one node incarnation off from the shared volume.
//
// Fence returns nil only when the victim can no longer change the volume.
// It is idempotent: fencing a victim that is already fenced succeeds, so
// a coordinator that resumes a recovery may simply fence again. An error
// wraps ErrFenceFailed (retry is safe) or one of the non-retriable errors
// documented in errors.go.
type Fencer interface {
	Fence(ctx context.Context, victim NodeRef) error
}

// FencerFunc adapts a function to Fencer.
type FencerFunc func(ctx context.Context, victim NodeRef) error

// Fence calls f.
func (f FencerFunc) Fence(ctx context.Context, victim NodeRef) error { return f(ctx, victim) }
