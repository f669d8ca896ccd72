package mirror

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errLapsed = errors.New("lease lapsed")

// spyLocker is a LocalLocker that records every request and whose locks
// refuse Use while refuse is set.
type spyLocker struct {
	l      *LocalLocker
	refuse atomic.Bool
	mu     sync.Mutex
	reqs   []RegionRequest
	uses   int
}

type spyLock struct {
	RegionLock
	s *spyLocker
}

func (l spyLock) Use() error {
	l.s.mu.Lock()
	l.s.uses++
	l.s.mu.Unlock()
	if l.s.refuse.Load() {
		return errLapsed
	}
	return nil
}

func (s *spyLocker) LockRegion(ctx context.Context, req RegionRequest) (RegionLock, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	lk, err := s.l.LockRegion(ctx, req)
	if err != nil {
		return nil, err
	}
	return spyLock{lk, s}, nil
}

func (s *spyLocker) requests() []RegionRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RegionRequest(nil), s.reqs...)
}

// TestWriteChecksItsRegionLockBeforeTheIO: a write whose region lock may
// no longer be used (its holder's lease lapsed) issues no I/O and says so.
func TestWriteChecksItsRegionLockBeforeTheIO(t *testing.T) {
	r := newRig(t, 2, 2)
	spy := &spyLocker{l: r.locker}
	n, err := r.tryOpen(0, func(c *Config) { c.Locker = spy })
	if err != nil {
		t.Fatal(err)
	}
	defer n.vol.Close()
	ctx := context.Background()
	old := bytes.Repeat([]byte{1}, testBS)
	if err := n.vol.WriteAt(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	spy.refuse.Store(true)
	err = n.vol.WriteAt(ctx, bytes.Repeat([]byte{2}, testBS), 0)
	if !errors.Is(err, errLapsed) {
		t.Fatalf("write under a lapsed lock: %v, want %v", err, errLapsed)
	}
	spy.refuse.Store(false)
	got := make([]byte, testBS)
	for i, leg := range r.legs {
		if err := leg.ReadAt(ctx, got, n.vol.geo.DataOffset); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, old) {
			t.Fatalf("leg %d holds %x... after a refused write, want %x...", i, got[:4], old[:4])
		}
	}
}

// TestRecoverFencedTakesRecoveryLocks: only the coordinator's recovery of
// a fenced node's slot asks for recovery locks; a plain Recover does not.
func TestRecoverFencedTakesRecoveryLocks(t *testing.T) {
	r := newRig(t, 2, 2)
	ctx := context.Background()
	// a's marks stay until the recovery: with FastConfig's 30 ms a loaded
	// machine could clear the region before RecoverFenced looks.
	a, err := r.tryOpen(0, func(c *Config) { c.ClearDelay = time.Hour })
	if err != nil {
		t.Fatal(err)
	}
	if err := a.vol.WriteAt(ctx, bytes.Repeat([]byte{7}, testBS), 0); err != nil {
		t.Fatal(err)
	}
	spy := &spyLocker{l: r.locker}
	b, err := r.tryOpen(1, func(c *Config) { c.Locker = spy })
	if err != nil {
		t.Fatal(err)
	}
	defer b.vol.Close()
	defer a.vol.Close()
	count := func() (rec, plain int) {
		for _, q := range spy.requests() {
			if q.Recovery {
				rec++
			} else {
				plain++
			}
		}
		return
	}
	rep, err := b.vol.RecoverFenced(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Regions == 0 {
		t.Fatalf("slot 0 had no marked region to recover: %+v", rep)
	}
	if rec, _ := count(); rec == 0 {
		t.Fatalf("RecoverFenced took no recovery lock: %+v", spy.requests())
	}
	if err := a.vol.WriteAt(ctx, bytes.Repeat([]byte{8}, testBS), 0); err != nil {
		t.Fatal(err)
	}
	before, _ := count()
	if _, err := b.vol.Recover(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if rec, _ := count(); rec != before {
		t.Fatalf("plain Recover took %d recovery locks", rec-before)
	}
}
