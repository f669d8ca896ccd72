package mirror

import (
	"context"
	"sync"
	"sync/atomic"
)

// dataHolds keeps the shared region locks of ordered writes
// (CallerOrdersWrites, OrderedWriter) as holds of the region lock
// (RegionHolder) from one write to the next, so that a write of a region
// this node wrote before asks the lock manager for nothing: it counts
// itself in the hold and checks the hold (Use) right before its data goes
// out. Without them, every write took, checked and released its region's
// lock (three rounds of the lock manager's node-wide mutex per write,
// which all of a node's writers queue on).
//
// A hold is given up, once the writes in flight under it are done, when
// another node asks for the region (its blocking callback: a copy, a
// verify, an unordered write there), when the lease is lost, and when a
// locker of this node asks for the region exclusively (pause: the lock
// manager sends no blocking callback for a conflict between two locks of
// one node, so such a locker would wait for the hold for ever). While a
// region is paused or its hold is being given up, ordered writes take the
// region's lock for the write alone, as without the cache, and queue in
// the lock manager behind the conflicting request.
//
// Only plain writes use the holds: a recovery write's lock is never kept
// for later. At most max holds are kept; past that, writes lock as
// without the cache.
type dataHolds struct {
	v      *Volume
	holder RegionHolder
	max    int

	mu     sync.RWMutex
	holds  map[int64]*dataHold
	paused map[int64]int // regions an exclusive locker of this node takes
	closed bool
	watch  sync.WaitGroup
}

// dataHold is one region's kept hold. users counts the writes under it;
// closingBit set in users means no new write may count itself in, and the
// hold is released by whoever brings the count of writes to zero (or by
// the one who set the bit, when none was in flight).
type dataHold struct {
	r     int64
	hold  RegionHold
	users atomic.Int64
	done  chan struct{} // closed once the hold is released
}

const closingBit = int64(1) << 62

func newDataHolds(v *Volume, holder RegionHolder, max int) *dataHolds {
	return &dataHolds{v: v, holder: holder, max: max, holds: map[int64]*dataHold{}, paused: map[int64]int{}}
}

// lock returns region r's lock for one plain ordered write: the kept hold
// when there is one, else a new hold it keeps, else the region's lock for
// this write alone.
func (d *dataHolds) lock(ctx context.Context, r int64) (RegionLock, error) {
	d.mu.RLock()
	h := d.holds[r]
	keep := h == nil && !d.closed && d.paused[r] == 0 && len(d.holds) < d.max
	d.mu.RUnlock()
	if h != nil && h.tryUse() {
		return keptLock{d, h}, nil
	}
	if !keep {
		return d.v.lockRegions(ctx, r, r, false, false)
	}
	g := d.v.geo
	hold, err := d.holder.HoldRegion(ctx, RegionRequest{Volume: d.v.lockNS, Off: r * g.RegionSize, Length: g.RegionSize})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed || d.paused[r] > 0 || d.holds[r] != nil {
		// Paused, closed or kept by another write meanwhile: this hold
		// serves this write alone.
		d.mu.Unlock()
		return onceLock{hold}, nil
	}
	h = &dataHold{r: r, hold: hold, done: make(chan struct{})}
	h.users.Store(1)
	d.holds[r] = h
	d.watch.Add(1)
	d.mu.Unlock()
	go d.watchHold(h, hold.Blocking(), hold.Lost())
	return keptLock{d, h}, nil
}

// tryUse counts a write in, unless the hold is being given up.
func (h *dataHold) tryUse() bool {
	for {
		u := h.users.Load()
		if u&closingBit != 0 {
			return false
		}
		if h.users.CompareAndSwap(u, u+1) {
			return true
		}
	}
}

// unuse counts a write out; the last one out of a hold being given up
// releases it.
func (d *dataHolds) unuse(h *dataHold) {
	if h.users.Add(-1) == closingBit {
		d.release(h)
	}
}

// giveUp lets no new write in and releases the hold once none is in
// flight; h.done is closed then.
func (d *dataHolds) giveUp(h *dataHold) {
	old := h.users.Or(closingBit)
	if old&closingBit == 0 && old == 0 {
		d.release(h)
	}
}

func (d *dataHolds) release(h *dataHold) {
	d.mu.Lock()
	if d.holds[h.r] == h {
		delete(d.holds, h.r)
	}
	d.mu.Unlock()
	if err := h.hold.Release(); err != nil {
		d.v.log.Warn("region lock release failed", "region", h.r, "error", err)
	}
	close(h.done)
}

// watchHold gives h up once another holder asks for the region or the
// lease is lost.
func (d *dataHolds) watchHold(h *dataHold, blocking, lost <-chan struct{}) {
	defer d.watch.Done()
	select {
	case <-blocking:
	case <-lost:
	case <-h.done:
		return
	}
	d.giveUp(h)
}

// pause makes way for an exclusive lock of regions [r0, r1] taken by this
// node: no new hold is kept in them, and the kept ones are given up once
// their writes are done. resume, to be called once the exclusive lock is
// released (or was never had), lets holds be kept there again.
func (d *dataHolds) pause(ctx context.Context, r0, r1 int64) (resume func(), err error) {
	var wait []*dataHold
	d.mu.Lock()
	for r := r0; r <= r1; r++ {
		d.paused[r]++
		if h := d.holds[r]; h != nil {
			wait = append(wait, h)
		}
	}
	d.mu.Unlock()
	resume = func() {
		d.mu.Lock()
		for r := r0; r <= r1; r++ {
			if d.paused[r]--; d.paused[r] <= 0 {
				delete(d.paused, r)
			}
		}
		d.mu.Unlock()
	}
	for _, h := range wait {
		d.giveUp(h)
		select {
		case <-h.done:
		case <-ctx.Done():
			resume()
			return nil, ctx.Err()
		}
	}
	return resume, nil
}

// close gives every hold up and waits until they are released and their
// watchers gone. No write may be in flight (Close holds ioMu).
func (d *dataHolds) close() {
	d.mu.Lock()
	d.closed = true
	all := make([]*dataHold, 0, len(d.holds))
	for _, h := range d.holds {
		all = append(all, h)
	}
	d.mu.Unlock()
	for _, h := range all {
		d.giveUp(h)
		<-h.done
	}
	d.watch.Wait()
}

// kept counts the holds kept (for tests).
func (d *dataHolds) kept() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.holds)
}

// keptLock is one write's use of a kept hold.
type keptLock struct {
	d *dataHolds
	h *dataHold
}

func (l keptLock) Token() uint64 { return holdToken(l.h.hold) }
func (l keptLock) Use() error    { return l.h.hold.Use() }
func (l keptLock) Release()      { l.d.unuse(l.h) }

// onceLock is a hold used for one write and released after it.
type onceLock struct{ hold RegionHold }

func (l onceLock) Token() uint64 { return holdToken(l.hold) }
func (l onceLock) Use() error    { return l.hold.Use() }
func (l onceLock) Release()      { l.hold.Release() }

// holdToken is a hold's fencing token when its type tells it (0 if not).
func holdToken(h RegionHold) uint64 {
	if t, ok := h.(interface{ Token() uint64 }); ok {
		return t.Token()
	}
	return 0
}
