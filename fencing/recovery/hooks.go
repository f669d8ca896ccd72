package recovery

import (
	"context"

	"github.com/shoal-ha/shoal/fencing"
)

// Hooks are the recovery steps that other parts of the daemon carry out:
// the store replays journals, the mirror resyncs, the DLM releases locks.
//
// Every hook must be idempotent. The engine never runs a step again once
// its completion is recorded, but a coordinator can die after a hook did
// its work and before the record was written; the next coordinator then
// runs the hook again. A hook that returns an error is retried with
// back-off, and the recovery does not go past it until it succeeds.
type Hooks interface {
	// ResyncBitmap merges victim's write-intent bitmap, resyncs the
	// regions it marks and releases victim's region locks (runs before
	// ReplayJournal: see StepResync).
	ResyncBitmap(ctx context.Context, victim fencing.NodeRef) error
	// ReplayJournal redoes victim's committed transactions and finishes or
	// rolls back its in-flight ones.
	ReplayJournal(ctx context.Context, victim fencing.NodeRef) error
	// ReleaseLocks releases victim's locks, which the DLM kept gated for
	// the coordinator since the victim died.
	ReleaseLocks(ctx context.Context, victim fencing.NodeRef) error
}

// HookFuncs adapts functions to Hooks; a nil function does nothing, for a
// daemon that has no store or mirror configured yet.
type HookFuncs struct {
	Replay  func(ctx context.Context, victim fencing.NodeRef) error
	Resync  func(ctx context.Context, victim fencing.NodeRef) error
	Release func(ctx context.Context, victim fencing.NodeRef) error
}

// ReplayJournal calls h.Replay.
func (h HookFuncs) ReplayJournal(ctx context.Context, v fencing.NodeRef) error {
	if h.Replay == nil {
		return nil
	}
	return h.Replay(ctx, v)
}

// ResyncBitmap calls h.Resync.
func (h HookFuncs) ResyncBitmap(ctx context.Context, v fencing.NodeRef) error {
	if h.Resync == nil {
		return nil
	}
	return h.Resync(ctx, v)
}

// ReleaseLocks calls h.Release.
func (h HookFuncs) ReleaseLocks(ctx context.Context, v fencing.NodeRef) error {
	if h.Release == nil {
		return nil
	}
	return h.Release(ctx, v)
}
