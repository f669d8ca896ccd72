package mirror

import (
	"context"
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
}

// NewLocalLocker returns an empty lock table.
func NewLocalLocker() *LocalLocker {
	return &LocalLocker{held: map[*heldRange]struct{}{}, changed: make(chan struct{})}
}

// LockRegion implements RegionLocker.
func (l *LocalLocker) LockRegion(ctx context.Context, volume string, off, length int64, exclusive bool) (func(), error) {
	want := &heldRange{volume: volume, off: off, end: off + length, exclusive: exclusive}
	for {
		l.mu.Lock()
		conflict := false
		for h := range l.held {
			if h.volume == volume && h.off < want.end && want.off < h.end && (h.exclusive || exclusive) {
				conflict = true
				break
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
