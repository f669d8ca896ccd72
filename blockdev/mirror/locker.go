package mirror

import (
	"context"
	"fmt"
	"sync"
)

// RegionRequest asks for a lock on [Off, Off+Length) of Volume.
type RegionRequest struct {
	Volume      string
	Off, Length int64
	// Exclusive asks for a write lock; otherwise the lock is shared.
	Exclusive bool
	// Recovery marks a lock the recovery coordinator takes to repair the
	// regions of a fenced node (Volume.RecoverFenced): the lock manager
	// grants it over the locks the dead node left behind, which stay
	// gated to everyone else until the recovery releases them.
	Recovery bool
	// Try asks HoldRegion for an answer at once: a hold that cannot be
	// granted now fails with an error matching ErrWouldBlock, holds
	// nothing and leaves nothing queued (no blocking callback is sent).
	// The volume's write path tries for checksum holds under its data
	// lock and waits for them only after letting the data lock go: a
	// hold may wait for a dead node's lock until its recovery is over,
	// and that recovery needs the data lock. A holder that ignores Try
	// makes the write wait under its data lock instead.
	Try bool
}

// RegionLock is a held region lock.
type RegionLock interface {
	// Token is the grant's fencing token: it only grows for the locked
	// resource (0 from a locker without tokens).
	Token() uint64
	// Use checks, right before the I/O the lock protects, that the lock
	// may still be used (its holder's lease holds). An error means the
	// I/O must not be issued; it is not retriable under this lock.
	Use() error
	// Release gives the lock up; called exactly once.
	Release()
}

// RegionLocker hands out cluster-wide locks on byte ranges of a volume. The
// daemon satisfies it with the lock manager's region locks; tests use
// LocalLocker, and processes on one machine can use fcntllock.
//
// LockRegion blocks until the range is held, or ctx ends (then it returns
// ctx's error and holds nothing).
type RegionLocker interface {
	LockRegion(ctx context.Context, req RegionRequest) (RegionLock, error)
}

// FuncLock is a RegionLock of a locker without fencing tokens or leases
// (one process, or processes of one host): Token is 0, Use always
// succeeds, Release calls the function once.
type FuncLock func()

// Token implements RegionLock.
func (FuncLock) Token() uint64 { return 0 }

// Use implements RegionLock.
func (FuncLock) Use() error { return nil }

// Release implements RegionLock.
func (f FuncLock) Release() { f() }

// RegionHolder is an optional ability of a RegionLocker: a lock kept until
// another holder asks for it (a blocking callback), so the holder can cache
// what it protects. The volume caches the checksum areas of the regions it
// writes this way, and keeps the shared region locks of ordered writes
// from one write to the next; with a RegionLocker that cannot hold
// (fcntllock), every write reads and rewrites its region's checksum area
// instead, and takes its region lock for itself.
//
// HoldRegion blocks like LockRegion (req.Recovery as there); the hold
// stays until Release.
type RegionHolder interface {
	HoldRegion(ctx context.Context, req RegionRequest) (RegionHold, error)
}

// RegionHold is one hold of a range. *dlm.Lock satisfies it. Use may be
// called by several goroutines at once (the writes of a region share its
// shared hold); the other methods are called by one goroutine at a time,
// and Release after every Use has returned.
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
	// try: fail with ErrWouldBlock instead of waiting (and signal nobody).
	try bool
}

// NewLocalLocker returns an empty lock table.
func NewLocalLocker() *LocalLocker {
	return &LocalLocker{held: map[*heldRange]struct{}{}, changed: make(chan struct{})}
}

// LockRegion implements RegionLocker. A recovery lock is a plain lock
// here: one process has no dead holders to lock over.
func (l *LocalLocker) LockRegion(ctx context.Context, req RegionRequest) (RegionLock, error) {
	unlock, err := l.Lock(ctx, req.Volume, req.Off, req.Length, req.Exclusive)
	if err != nil {
		return nil, err
	}
	return FuncLock(unlock), nil
}

// Lock locks [off, off+length) of volume and returns the function that
// releases it (once): LockRegion's shorthand for tests and tools.
func (l *LocalLocker) Lock(ctx context.Context, volume string, off, length int64, exclusive bool) (func(), error) {
	return l.lock(ctx, &heldRange{volume: volume, off: off, end: off + length, exclusive: exclusive})
}

// HoldRegion implements RegionHolder: the hold's Blocking channel closes
// when another LockRegion or HoldRegion waits for an overlapping range. A
// recovery hold is a plain one here, as in LockRegion.
func (l *LocalLocker) HoldRegion(ctx context.Context, req RegionRequest) (RegionHold, error) {
	h := &heldRange{volume: req.Volume, off: req.Off, end: req.Off + req.Length, exclusive: req.Exclusive, blocking: make(chan struct{}), try: req.Try}
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
				if want.try {
					break
				}
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
		if want.try {
			l.mu.Unlock()
			return nil, fmt.Errorf("%w: %s [%d, %d)", ErrWouldBlock, volume, want.off, want.end)
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
