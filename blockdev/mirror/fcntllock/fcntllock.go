// Package fcntllock is a mirror.RegionLocker for processes on one machine:
// POSIX open-file-description byte-range locks (F_OFD_SETLKW) on a lock
// file per volume. The kernel drops a dead process's locks, so a crashed
// holder never blocks the others. It stands in for the lock manager where
// the nodes are processes of one host (test rigs, shoalblk on one machine).
//
// Usage:
//
//	cfg := mirror.DefaultConfig(slot)
//	cfg.Locker = fcntllock.New("/run/shoal/locks")
package fcntllock

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// Locker locks ranges of <dir>/<volume>.lock.
type Locker struct {
	dir string
	// Poll is how often a blocked lock is retried while watching ctx
	// (F_OFD_SETLKW itself cannot be cancelled).
	Poll time.Duration
}

// New returns a locker with lock files in dir (created if missing).
func New(dir string) *Locker { return &Locker{dir: dir, Poll: time.Millisecond} }

// LockRegion implements mirror.RegionLocker. A recovery lock is a plain
// lock here: the kernel already dropped a dead process's locks.
func (l *Locker) LockRegion(ctx context.Context, req mirror.RegionRequest) (mirror.RegionLock, error) {
	unlock, err := l.Lock(ctx, req.Volume, req.Off, req.Length, req.Exclusive)
	if err != nil {
		return nil, err
	}
	return mirror.FuncLock(unlock), nil
}

// Lock locks [off, off+length) of volume and returns the function that
// releases it. Every call opens its own file description, so two locks
// taken by one process conflict like locks of two processes do.
func (l *Locker) Lock(ctx context.Context, volume string, off, length int64, exclusive bool) (func(), error) {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return nil, fmt.Errorf("fcntllock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(l.dir, filepath.Base(volume)+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fcntllock: %w", err)
	}
	typ := int16(unix.F_RDLCK)
	if exclusive {
		typ = unix.F_WRLCK
	}
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: length}
	poll := l.Poll
	if poll <= 0 {
		poll = time.Millisecond
	}
	for i := 0; ; i++ {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err == nil {
			break
		}
		if err != unix.EAGAIN && err != unix.EACCES && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("fcntllock: lock %s [%d,+%d): %w", volume, off, length, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(min(poll*time.Duration(1+i/100), 20*time.Millisecond)):
		}
	}
	return func() {
		un := unix.Flock_t{Type: unix.F_UNLCK, Start: off, Len: length}
		unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &un)
		f.Close()
	}, nil
}
