package mirror

import (
	"context"
	"fmt"
	"sync"
)

// RegionLocker hands out cluster-wide locks on byte ranges of a volume. The
// daemon satisfies it with the lock manager's region locks; tests use
// LocalLocker, and processes on one machine can use fcntllock.
//
// LockRegion blocks until [off, off+length) of volume is held, exclusive or
// shared, or ctx ends (then it returns ctx's error and holds nothing). The
// returned unlock releases the range; it is called exactly once.
type RegionLocker interface {
	LockRegion(ctx context.Context, volume string, off, length int64, exclusive bool) (unlock func(), err error)
}

// RegionHolder is an optional ability of a RegionLocker: a lock kept until
// another holder asks for it (a blocking callback), so the holder can cache
// what it protects. The volume caches the checksum areas of the regions it
// writes this way; with a RegionLocker that cannot hold (fcntllock), every
// write reads and rewrites its region's checksum area instead.
//
// HoldRegion blocks like LockRegion; the hold stays until Release.
type RegionHolder interface {
	HoldRegion(ctx context.Context, volume string, off, length int64, exclusive bool) (RegionHold, error)
}

// RegionHold is one hold of a range. *dlm.Lock satisfies it. Its methods
// are called by one goroutine at a time.
type RegionHold interface {
	// Blocking is closed when another holder queues a conflicting request:
	// the holder should write back what it caches and Release soon.
	Blocking() <-chan struct{}
	// Lost is closed when the holder may no longer use its locks at all
	// (its lease is gone); what it caches must then be dropped unwritten.
	// A nil channel never closes.
	Lost() <-chan struct{}
	// Use returns nil when the range may be written right now, or why not
	// (the lease is lost); it is called right before every write-back.
	Use() error
	// Release gives the range up; it is called exactly once.
	Release() error
}

// LocalLocker is a RegionLocker for the goroutines of one process: a
// reader/writer lock per byte range, conflicting only where ranges overlap
// and at least one side is exclusive.
type LocalLocker struct {
	mu      sync.Mutex
	held    map[*heldRange]struct{}
	changed chan struct{}
}

type heldRange struct {
	volume    string
	off, end  int64
	exclusive bool
	// blocking is set for holds (HoldRegion): closed once a conflicting
	// request waits for the range.
	blocking chan struct{}
	signaled bool
}

// NewLocalLocker returns an empty lock table.
func NewLocalLocker() *LocalLocker {
	return &LocalLocker{held: map[*heldRange]struct{}{}, changed: make(chan struct{})}
}

// LockRegion implements RegionLocker.
func (l *LocalLocker) LockRegion(ctx context.Context, volume string, off, length int64, exclusive bool) (func(), error) {
	return l.lock(ctx, &heldRange{volume: volume, off: off, end: off + length, exclusive: exclusive})
}

// HoldRegion implements RegionHolder: the hold's Blocking channel closes
// when another LockRegion or HoldRegion waits for an overlapping range.
func (l *LocalLocker) HoldRegion(ctx context.Context, volume string, off, length int64, exclusive bool) (RegionHold, error) {
	h := &heldRange{volume: volume, off: off, end: off + length, exclusive: exclusive, blocking: make(chan struct{})}
	unlock, err := l.lock(ctx, h)
	if err != nil {
		return nil, err
	}
	return &localHold{blocking: h.blocking, unlock: unlock}, nil
}

type localHold struct {
	blocking chan struct{}
	unlock   func()
	released bool
}

func (h *localHold) Blocking() <-chan struct{} { return h.blocking }
func (h *localHold) Lost() <-chan struct{}     { return nil }

func (h *localHold) Use() error {
	if h.released {
		return fmt.Errorf("%w: used after release", ErrNotHeld)
	}
	return nil
}

func (h *localHold) Release() error {
	if h.released {
		return fmt.Errorf("%w: released twice", ErrNotHeld)
	}
	h.released = true
	h.unlock()
	return nil
}

func (l *LocalLocker) lock(ctx context.Context, want *heldRange) (func(), error) {
	volume, exclusive := want.volume, want.exclusive
	for {
		l.mu.Lock()
		conflict := false
		for h := range l.held {
			if h.volume == volume && h.off < want.end && want.off < h.end && (h.exclusive || exclusive) {
				conflict = true
				// The blocking callback of every hold in the way.
				if h.blocking != nil && !h.signaled {
					h.signaled = true
					close(h.blocking)
				}
			}
		}
		if !conflict {
			l.held[want] = struct{}{}
			l.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					l.mu.Lock()
					delete(l.held, want)
					close(l.changed)
					l.changed = make(chan struct{})
					l.mu.Unlock()
				})
			}, nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Held counts the ranges currently held (for tests).
func (l *LocalLocker) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held)
}
