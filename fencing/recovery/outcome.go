package recovery

import (
	"context"

	"github.com/shoal-ha/shoal/fencing"
)

// Outcome says what a recovery step did, for the record, the logs and the
// dashboard: how the victim was fenced, how many journal records were
// replayed, how many regions resynced, how many locks released.
type Outcome struct {
	// Method is how the step was done: for the fence, "reservations",
	// "lease", "agent" or a combination such as "reservations+lease".
	Method string `json:"method,omitempty"`
	// Count is how many things the step handled; Unit names them
	// ("records", "regions", "locks").
	Count int64  `json:"count,omitempty"`
	Unit  string `json:"unit,omitempty"`
}

// IsZero reports whether the outcome says nothing.
func (o Outcome) IsZero() bool { return o == Outcome{} }

// OutcomeHooks is the optional ability of Hooks to report what each step
// did. The engine calls these instead of the plain methods when Hooks
// implements it. The same idempotency rules apply (see Hooks).
type OutcomeHooks interface {
	Hooks
	ReplayJournalOutcome(ctx context.Context, victim fencing.NodeRef) (Outcome, error)
	ResyncBitmapOutcome(ctx context.Context, victim fencing.NodeRef) (Outcome, error)
	ReleaseLocksOutcome(ctx context.Context, victim fencing.NodeRef) (Outcome, error)
}

// OutcomeFencer is the optional ability of a Config.Fencer to say how it
// fenced. The engine calls FenceOutcome instead of Fence when the Fencer
// implements it.
type OutcomeFencer interface {
	fencing.Fencer
	FenceOutcome(ctx context.Context, victim fencing.NodeRef) (Outcome, error)
}

// OutcomeHookFuncs adapts functions that report outcomes to OutcomeHooks;
// a nil function does nothing and reports nothing.
type OutcomeHookFuncs struct {
	Replay  func(ctx context.Context, victim fencing.NodeRef) (Outcome, error)
	Resync  func(ctx context.Context, victim fencing.NodeRef) (Outcome, error)
	Release func(ctx context.Context, victim fencing.NodeRef) (Outcome, error)
}

func call(f func(context.Context, fencing.NodeRef) (Outcome, error), ctx context.Context, v fencing.NodeRef) (Outcome, error) {
	if f == nil {
		return Outcome{}, nil
	}
	return f(ctx, v)
}

// ReplayJournalOutcome calls h.Replay.
func (h OutcomeHookFuncs) ReplayJournalOutcome(ctx context.Context, v fencing.NodeRef) (Outcome, error) {
	return call(h.Replay, ctx, v)
}

// ResyncBitmapOutcome calls h.Resync.
func (h OutcomeHookFuncs) ResyncBitmapOutcome(ctx context.Context, v fencing.NodeRef) (Outcome, error) {
	return call(h.Resync, ctx, v)
}

// ReleaseLocksOutcome calls h.Release.
func (h OutcomeHookFuncs) ReleaseLocksOutcome(ctx context.Context, v fencing.NodeRef) (Outcome, error) {
	return call(h.Release, ctx, v)
}

// ReplayJournal calls h.Replay and drops the outcome.
func (h OutcomeHookFuncs) ReplayJournal(ctx context.Context, v fencing.NodeRef) error {
	_, err := h.ReplayJournalOutcome(ctx, v)
	return err
}

// ResyncBitmap calls h.Resync and drops the outcome.
func (h OutcomeHookFuncs) ResyncBitmap(ctx context.Context, v fencing.NodeRef) error {
	_, err := h.ResyncBitmapOutcome(ctx, v)
	return err
}

// ReleaseLocks calls h.Release and drops the outcome.
func (h OutcomeHookFuncs) ReleaseLocks(ctx context.Context, v fencing.NodeRef) error {
	_, err := h.ReleaseLocksOutcome(ctx, v)
	return err
}
