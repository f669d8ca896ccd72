package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// csumCache keeps the checksum areas of the regions this node writes, each
// under a hold of the region's checksum lock (RegionHolder), so a write
// patches memory instead of reading and rewriting its region's checksum
// area on every leg.
//
// Why a crash loses nothing: an area held here is changed by nobody else
// (the hold is exclusive), and an area that differs from the legs (dirty)
// belongs to a region marked in this slot's write-intent bitmap, because a
// write marks its regions before it patches their areas. A crash leaves
// the region marked, and recovery recomputes its checksums from the data.
// A dirty area is written back before the region's mark is cleared
// (clean), when another holder asks for the lock (the blocking callback:
// another node's writer, a verify, scrub or resync), when the cache evicts
// it, and at Close. An area that could not be written back (its hold's
// lease is lost, or the legs failed) leaves its region degraded, so the
// mark stays until the region is copied and its checksums recomputed.
//
// Waiting for a hold: a write holds its data lock while it patches, and a
// hold may have to wait for a dead node's lock, which is released only
// after a recovery that itself needs that data lock (the resync of the
// dead node's regions). So under the data lock the write only tries for a
// hold (RegionRequest.Try); when it cannot have one at once it lets its
// data lock go, waits for the hold (await) and starts again. An area
// loaded that way serves its write: the blocking callback waits for that
// write's patch, at most csumMinHold.
//
// Recovery entries: a recovery write (RecoveryWriter) loads with a
// recovery hold, granted over a dead node's hold. Only recovery writes use
// such an entry; a plain write waits for its own hold, that is, for the
// dead node's hold to be released at the end of the recovery, as the lock
// manager gates every other lock of the dead node. A plain write that
// needs the region drops an idle recovery entry first (a recovery lock is
// never kept for later), and a recovery write preempts a plain load that
// is still waiting, so neither waits for the other.
type csumCache struct {
	v      *Volume
	holder RegionHolder
	ns     string // checksum-lock namespace
	max    int    // entries kept

	// mu guards entries and closed. A write looks its entry up under
	// the read lock: writers of different regions do not queue on it.
	mu      sync.RWMutex
	entries map[int64]*csumEntry
	// count is len(entries), kept beside it under mu, so that a write
	// can see without taking mu that nothing needs evicting.
	count  atomic.Int64
	tick   atomic.Uint64 // the clock of the entries' lastUse
	closed bool
	watch  sync.WaitGroup
}

// csumMinHold bounds how long a blocking callback waits for the first
// patch of an area loaded outside its write's data lock (see csumCache).
const csumMinHold = 50 * time.Millisecond

// csumEntry is one region's cached checksum area.
//
// Writing back does not hold mu across the disk writes, so the region's
// writers go on patching meanwhile: the dirty blocks are copied under mu,
// written out under wb alone, and a block is counted clean afterwards only
// if no patch touched it since its copy was taken (patchSeq). wb keeps
// write-backs of one entry in order: a late copy never overwrites a newer
// one on the legs, and the hold is not released under a write-back still
// in flight. Lock order: wb before mu.
type csumEntry struct {
	r        int64
	recovery bool       // loaded under a recovery hold: for recovery writes only
	wb       sync.Mutex // held while the area is written back or dropped
	mu       sync.Mutex // held while the area is loaded or patched
	// Guarded by mu:
	hold  RegionHold // set before ready; released only under wb and mu
	area  []byte
	dirty []bool // per block of area: differs from the legs
	// patchSeq per block of area: seq at the block's last patch.
	patchSeq []uint64
	seq      uint64 // patches of the area so far
	ndirty   int
	gone     bool          // dropped: users look the region up again
	stop     chan struct{} // closed when dropped; ends the watcher
	used     chan struct{} // closed at the area's first patch
	// Guarded by mu as well: whether used is closed.
	patched  bool
	loadedAt time.Time // on the volume's clock; set before ready
	lastUse  atomic.Uint64
	// Guarded by the cache's mu:
	ready bool // loaded
	// preempt cancels a plain load's wait for its hold (await), so that
	// a recovery write or a copy of the region is not stuck behind it:
	// the plain hold may wait for a dead node's lock until the recovery
	// is over. The preempted load is asked again.
	preempt context.CancelFunc
}

// errMustWait: a plain write cannot have a region's checksum area at once
// under its data lock; it lets the data lock go, waits (await) and starts
// again. Nothing was patched or written.
var errMustWait = errors.New("mirror: checksum hold must be waited for outside the data lock")

func newCsumCache(v *Volume, holder RegionHolder, maxBytes int64) *csumCache {
	n := int(max(1, maxBytes/v.geo.ChecksumPerRegion))
	return &csumCache{v: v, holder: holder, ns: v.csumNS(), max: n, entries: map[int64]*csumEntry{}}
}

// csumNS is the lock namespace of the volume's checksum areas (one range
// per region, offsets in volume bytes like the data's).
func (v *Volume) csumNS() string { return v.lockNS + "-csum" }

// tableNS is the lock namespace of the leg table's changes.
func (v *Volume) tableNS() string { return v.lockNS + "-table" }

// LockNamespaces are the region-lock namespaces (RegionRequest.Volume)
// the volume's locks use: the data regions, the checksum areas and the leg
// table. Once RecoverFenced has resynced a fenced node's slot, its locks
// in these namespaces protect nothing more (the legs agree on every
// region it marked, the checksum areas it cached are recomputed from the
// data, its leg table changes were single etcd transactions): the
// recovery coordinator releases them then, ahead of the node's other
// locks, so that the survivors' writes stop waiting for it.
func (v *Volume) LockNamespaces() []string { return []string{v.lockNS, v.csumNS(), v.tableNS()} }

// newEntry adds a loading entry for region r, locked. Called with c.mu held.
func (c *csumCache) newEntry(r int64, recovery bool) *csumEntry {
	e := &csumEntry{r: r, recovery: recovery, stop: make(chan struct{}), used: make(chan struct{})}
	e.lastUse.Store(c.tick.Load())
	e.mu.Lock()
	c.entries[r] = e
	c.count.Store(int64(len(c.entries)))
	return e
}

// get returns region r's entry, locked, for a write that holds its data
// lock. A plain write (recovery false) never waits for a hold here: it
// tries for one, and gets errMustWait when the region's area is being
// loaded, is held under a recovery hold, or its hold cannot be granted at
// once. A recovery write waits: its hold is granted over a dead node's
// and preempts a plain load of the region that is still waiting.
func (c *csumCache) get(ctx context.Context, r int64, recovery bool) (*csumEntry, error) {
	for {
		// The common case, a loaded area of this kind of write, under
		// the read lock.
		c.mu.RLock()
		e := c.entries[r]
		fast := !c.closed && e != nil && e.ready && (recovery || !e.recovery)
		c.mu.RUnlock()
		if fast {
			e.lastUse.Store(c.tick.Add(1))
			e.mu.Lock()
			if e.gone {
				e.mu.Unlock()
				continue
			}
			return e, nil
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if e := c.entries[r]; e != nil {
			if !recovery && (!e.ready || e.recovery) {
				c.mu.Unlock()
				return nil, errMustWait
			}
			e.lastUse.Store(c.tick.Add(1))
			if !e.ready && e.preempt != nil {
				e.preempt()
			}
			c.mu.Unlock()
			e.mu.Lock()
			if e.gone {
				e.mu.Unlock()
				continue
			}
			return e, nil
		}
		e = c.newEntry(r, recovery)
		c.mu.Unlock()
		if err := c.load(ctx, e, recovery, !recovery); err != nil {
			e.gone = true
			c.remove(e)
			e.mu.Unlock()
			if errors.Is(err, ErrWouldBlock) {
				return nil, errMustWait
			}
			return nil, err
		}
		return e, nil
	}
}

// await waits, with no data lock held, until the checksum areas of regions
// [r0, r1] are loaded under plain holds, so that a plain write can start
// again. Idle recovery entries in the way are written back and dropped. A
// load waiting here gives way to a recovery write or a copy of its region
// and is asked again.
func (c *csumCache) await(ctx context.Context, r0, r1 int64) error {
	for r := r0; r <= r1; {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		c.tick.Add(1)
		e := c.entries[r]
		switch {
		case e == nil:
			e = c.newEntry(r, false)
			lctx, cancel := context.WithCancel(ctx)
			e.preempt = cancel
			c.mu.Unlock()
			err := c.load(lctx, e, false, false)
			preempted := ctx.Err() == nil && lctx.Err() != nil
			cancel()
			if err != nil {
				e.gone = true
				c.remove(e)
				e.mu.Unlock()
				if preempted {
					continue // look again
				}
				return fmt.Errorf("mirror: checksums of region %d: %w", r, err)
			}
			e.mu.Unlock()
			r++
		case !e.ready:
			c.mu.Unlock()
			e.mu.Lock() // the load in progress ends
			e.mu.Unlock()
		case e.recovery:
			c.mu.Unlock()
			if err := c.drop(ctx, e); err != nil {
				c.v.log.Warn("checksum area of a recovery write not written back", "region", r, "error", err)
			}
		default:
			c.mu.Unlock()
			r++
		}
	}
	return nil
}

// load takes the hold of e's region and reads its area from an in-sync
// leg. Under the hold the legs' copy is current: every earlier holder wrote
// its changes back before releasing, or left the region marked (a crash)
// for a recovery that recomputes the area under this same lock.
// try asks for the hold only if it can be granted at once (ErrWouldBlock).
func (c *csumCache) load(ctx context.Context, e *csumEntry, recovery, try bool) error {
	g := c.v.geo
	hold, err := c.holder.HoldRegion(ctx, RegionRequest{Volume: c.ns, Off: e.r * g.RegionSize, Length: g.RegionSize, Exclusive: true, Recovery: recovery, Try: try})
	if err != nil {
		return err
	}
	area := make([]byte, g.ChecksumPerRegion)
	if err := c.v.readChecksums(ctx, c.v.view.Load(), e.r, area); err != nil {
		hold.Release()
		return err
	}
	e.hold, e.area = hold, area
	e.dirty = make([]bool, g.ChecksumPerRegion/int64(g.BlockSize))
	e.patchSeq = make([]uint64, len(e.dirty))
	e.loadedAt = c.v.now()
	c.mu.Lock()
	e.ready, e.preempt = true, nil
	c.mu.Unlock()
	c.watch.Add(1)
	go c.watchHold(e, hold.Blocking(), hold.Lost())
	return nil
}

// watchHold writes e back and releases its hold once another holder asks
// for it or the lease is lost (then the write-back is refused by Use and
// the area is dropped). Asked by another holder, it first lets the area
// serve the write that loaded it, for at most csumMinHold: a write that
// waited for its hold outside its data lock would otherwise lose the hold
// before it could use it, again and again while others want the region.
func (c *csumCache) watchHold(e *csumEntry, blocking, lost <-chan struct{}) {
	defer c.watch.Done()
	select {
	case <-blocking:
		t := c.v.clk.NewTimer(csumMinHold)
		select {
		case <-e.used:
		case <-t.C():
		case <-lost:
		case <-e.stop:
		}
		t.Stop()
	case <-lost:
	case <-e.stop:
		return
	}
	if err := c.drop(context.Background(), e); err != nil {
		c.v.log.Warn("checksum area not written back before giving up its lock", "region", e.r, "error", err)
	}
}

func (c *csumCache) remove(e *csumEntry) {
	c.mu.Lock()
	if c.entries[e.r] == e {
		delete(c.entries, e.r)
		c.count.Store(int64(len(c.entries)))
	}
	c.mu.Unlock()
}

// patch records the checksums of p, written at volume offset off, in the
// cached areas of regions [r0, r1], which the caller has marked.
// Every region's entry is taken before any is patched: a plain write that
// must wait (errMustWait) leaves every area as it was.
func (c *csumCache) patch(ctx context.Context, p []byte, off, r0, r1 int64, recovery bool) error {
	g := c.v.geo
	bs := int64(g.BlockSize)
	got := make([]*csumEntry, 0, r1-r0+1)
	for r := r0; r <= r1; r++ {
		e, err := c.get(ctx, r, recovery)
		if err != nil {
			for _, e := range got {
				e.mu.Unlock()
			}
			return fmt.Errorf("mirror: checksums of region %d: %w", r, err)
		}
		got = append(got, e)
	}
	for k, e := range got {
		r := r0 + int64(k)
		rs, re := r*g.RegionSize, (r+1)*g.RegionSize
		ws, we := max(rs, off), min(re, off+int64(len(p)))
		for b := ws; b < we; b += bs {
			i := (b - rs) / bs
			putCsum(e.area, i, blockCsum(p[b-off:b-off+bs]))
			ab := i * csumSize / bs
			if !e.dirty[ab] {
				e.dirty[ab] = true
				e.ndirty++
			}
			e.patchSeq[ab] = e.seq + 1
		}
		e.seq++
		if !e.patched {
			e.patched = true
			close(e.used)
		}
		e.mu.Unlock()
	}
	c.evictExcess(ctx)
	return nil
}

// areaCopy is the dirty blocks of an area as they were at one moment:
// what a write-back writes.
type areaCopy struct {
	seq    uint64 // the area's patch count when copied
	blocks []int  // dirty block indexes of the area, ascending
	data   []byte // their contents, block after block
}

// copyDirty copies e's dirty blocks. Called with e.mu held.
func (c *csumCache) copyDirty(e *csumEntry) areaCopy {
	bs := c.v.geo.BlockSize
	cp := areaCopy{seq: e.seq, blocks: make([]int, 0, e.ndirty), data: make([]byte, 0, e.ndirty*bs)}
	for b, d := range e.dirty {
		if d {
			cp.blocks = append(cp.blocks, b)
			cp.data = append(cp.data, e.area[b*bs:(b+1)*bs]...)
		}
	}
	return cp
}

// written counts the blocks of cp clean where no patch came after the
// copy; the others stay dirty for the next write-back. Called with e.mu
// held.
func (e *csumEntry) written(cp areaCopy) {
	for _, b := range cp.blocks {
		if e.dirty[b] && e.patchSeq[b] <= cp.seq {
			e.dirty[b] = false
			e.ndirty--
		}
	}
}

// writeOut writes cp, the copy of e's dirty blocks, to every writable
// leg, runs of adjacent blocks in one write each. Called with e.wb held
// (e.hold stays), not e.mu: the region's writers patch meanwhile. A leg
// that did not take it leaves the region degraded.
func (c *csumCache) writeOut(ctx context.Context, e *csumEntry, cp areaCopy) error {
	if len(cp.blocks) == 0 {
		return nil
	}
	if err := e.hold.Use(); err != nil {
		return err
	}
	v := c.v
	bs := v.geo.BlockSize
	base := v.geo.ChecksumOffsetOf(e.r)
	w := v.view.Load()
	ioctx := context.WithoutCancel(ctx) // every leg or none, see writeOnce
	errs := parallel(w.writable, func(i int) error {
		for k := 0; k < len(cp.blocks); {
			end := k + 1
			for end < len(cp.blocks) && cp.blocks[end] == cp.blocks[end-1]+1 {
				end++
			}
			if err := w.devs[i].WriteAt(ioctx, cp.data[k*bs:end*bs], base+int64(cp.blocks[k]*bs)); err != nil {
				return err
			}
			k = end
		}
		return nil
	})
	if err := v.settle(ctx, w, w.writable, errs, fmt.Sprintf("write back checksums of region %d", e.r)); err != nil {
		return err
	}
	for _, err := range errs {
		if err != nil || !w.allInSync() {
			// A leg out of sync missed the area; the region's copy
			// to it recomputes it, and the mark must stay until then.
			v.taint(e.r)
			break
		}
	}
	return nil
}

// writeBack writes e's dirty blocks to every writable leg. Called with
// e.wb and e.mu held; e.mu stays held throughout (nothing is patched
// meanwhile).
func (c *csumCache) writeBack(ctx context.Context, e *csumEntry) error {
	if e.ndirty == 0 {
		return nil
	}
	cp := c.copyDirty(e)
	if err := c.writeOut(ctx, e, cp); err != nil {
		return err
	}
	e.written(cp)
	return nil
}

// writeBackOpen writes e's dirty blocks back while its writers go on
// patching: e.mu is held only to copy the blocks and to count them clean.
// Called with e.wb held; an entry dropped meanwhile has nothing to write.
func (c *csumCache) writeBackOpen(ctx context.Context, e *csumEntry) error {
	e.mu.Lock()
	if e.gone || e.ndirty == 0 {
		e.mu.Unlock()
		return nil
	}
	cp := c.copyDirty(e)
	e.mu.Unlock()
	if err := c.writeOut(ctx, e, cp); err != nil {
		return err
	}
	e.mu.Lock()
	e.written(cp)
	e.mu.Unlock()
	return nil
}

// drop writes e back, releases its hold and forgets it. An area that could
// not be written back leaves its region degraded (still marked).
func (c *csumCache) drop(ctx context.Context, e *csumEntry) error {
	e.wb.Lock()
	defer e.wb.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone {
		return nil
	}
	err := c.writeBack(ctx, e)
	if err != nil {
		c.v.taint(e.r)
	}
	e.gone = true
	close(e.stop)
	if rerr := e.hold.Release(); rerr != nil {
		c.v.log.Warn("checksum lock release failed", "region", e.r, "error", rerr)
	}
	c.remove(e)
	return err
}

// evictExcess drops the least recently used entries beyond the cache's
// size. A failed write-back is logged: the region stays marked.
func (c *csumCache) evictExcess(ctx context.Context) {
	if c.count.Load() <= int64(c.max) {
		return // the common case: no need to take the cache's lock
	}
	for {
		c.mu.Lock()
		if len(c.entries) <= c.max {
			c.mu.Unlock()
			return
		}
		var victim *csumEntry
		now := c.v.now()
		for _, e := range c.entries {
			if !e.ready {
				// Loading: its fields are written outside c.mu until
				// ready is set under it.
				continue
			}
			// An area not yet patched is spared a while for the write
			// that loaded it (see watchHold).
			fresh := !isClosed(e.used) && now.Sub(e.loadedAt) < csumMinHold
			if !fresh && (victim == nil || e.lastUse.Load() < victim.lastUse.Load()) {
				victim = e
			}
		}
		c.mu.Unlock()
		if victim == nil {
			return // all loading or not yet used; their writers evict
		}
		if err := c.drop(ctx, victim); err != nil {
			c.v.log.Warn("checksum area not written back on eviction", "region", victim.r, "error", err)
		}
	}
}

// writeBackRegions writes back the cached areas of regions, keeping their
// holds: clean calls it before it flushes the legs and clears the marks.
// The regions' writers are not held up by it (writeBackOpen): a block
// patched while its area was written out stays dirty, and so does the
// write's region, whose mark clean keeps (its write sequence moved on).
func (c *csumCache) writeBackRegions(ctx context.Context, regions []int64) error {
	for _, r := range regions {
		c.mu.Lock()
		e := c.entries[r]
		if e != nil && !e.ready {
			e = nil // being loaded for a new write: nothing to write yet
		}
		c.mu.Unlock()
		if e == nil {
			continue
		}
		e.wb.Lock()
		err := c.writeBackOpen(ctx, e)
		e.wb.Unlock()
		if err != nil {
			return fmt.Errorf("mirror: write back checksums of region %d: %w", r, err)
		}
	}
	return nil
}

// forget drops region r's entry, writing it back: a reader or rewriter of
// the area on this node takes the checksum lock next.
// A plain load still waiting for its hold gives way (it may wait for a
// dead node's hold that only this copy's recovery releases).
func (c *csumCache) forget(ctx context.Context, r int64) {
	c.mu.Lock()
	e := c.entries[r]
	if e != nil && !e.ready && e.preempt != nil {
		e.preempt()
	}
	c.mu.Unlock()
	if e == nil {
		return
	}
	if err := c.drop(ctx, e); err != nil {
		c.v.log.Warn("checksum area not written back", "region", r, "error", err)
	}
}

// close writes back and drops every entry and waits for the watchers.
func (c *csumCache) close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	all := make([]*csumEntry, 0, len(c.entries))
	for _, e := range c.entries {
		all = append(all, e)
	}
	c.mu.Unlock()
	var first error
	for _, e := range all {
		if err := c.drop(ctx, e); err != nil && first == nil {
			first = fmt.Errorf("mirror: write back checksums of region %d: %w", e.r, err)
		}
	}
	c.watch.Wait()
	return first
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// cached counts the cached areas and the dirty ones (for tests).
func (c *csumCache) cached() (n, dirty int) {
	c.mu.Lock()
	all := make([]*csumEntry, 0, len(c.entries))
	for _, e := range c.entries {
		all = append(all, e)
	}
	c.mu.Unlock()
	for _, e := range all {
		e.mu.Lock()
		if !e.gone {
			n++
			if e.ndirty > 0 {
				dirty++
			}
		}
		e.mu.Unlock()
	}
	return n, dirty
}

// taint keeps region r marked until it is copied to every leg again (its
// checksums recomputed): its cached area did not reach the legs.
func (v *Volume) taint(r int64) {
	v.stateMu.Lock()
	v.in.degraded.Set(r)
	v.stateMu.Unlock()
}

// lockChecksums takes region r's checksum lock for a reader or rewriter of
// the area other than the write path (verify, scrub, region copies). This
// node's cached copy is written back and dropped first, so the legs hold
// the current area, and other nodes' holds are called back by the lock.
// The caller holds the region's data lock, so no write of this node can
// cache the area again meanwhile.
// recovery marks the recovery coordinator's lock (see RegionRequest): a
// dead writer may have left the area held.
func (v *Volume) lockChecksums(ctx context.Context, r int64, exclusive, recovery bool) (RegionLock, error) {
	if v.csums != nil {
		v.csums.forget(ctx, r)
	}
	return v.locker.LockRegion(ctx, RegionRequest{Volume: v.csumNS(), Off: r * v.geo.RegionSize, Length: v.geo.RegionSize, Exclusive: exclusive, Recovery: recovery})
}
