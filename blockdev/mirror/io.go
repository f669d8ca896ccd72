package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/shoal-ha/shoal/blockdev"
)

// markAhead is how many regions past a sequential write are marked with it.
const markAhead = 7

// lockRegions takes the region lock over regions [r0, r1].
// recovery marks the recovery coordinator's locks (see RegionRequest).
func (v *Volume) lockRegions(ctx context.Context, r0, r1 int64, exclusive, recovery bool) (RegionLock, error) {
	req := RegionRequest{Volume: v.lockNS, Off: r0 * v.geo.RegionSize, Length: (r1 - r0 + 1) * v.geo.RegionSize, Exclusive: exclusive, Recovery: recovery}
	if exclusive {
		return v.lockExclusive(ctx, r0, r1, req)
	}
	return v.locker.LockRegion(ctx, req)
}

// lockExclusive takes req, an exclusive lock within regions [r0, r1],
// after this node's kept holds of those regions are given up (see
// dataHolds): the lock manager would let it wait for them for ever.
func (v *Volume) lockExclusive(ctx context.Context, r0, r1 int64, req RegionRequest) (RegionLock, error) {
	if v.dholds == nil {
		return v.locker.LockRegion(ctx, req)
	}
	resume, err := v.dholds.pause(ctx, r0, r1)
	if err != nil {
		return nil, err
	}
	lk, err := v.locker.LockRegion(ctx, req)
	if err != nil {
		resume()
		return nil, err
	}
	return resumingLock{lk, resume}, nil
}

// resumingLock is an exclusive lock whose release lets this node keep
// holds in its regions again.
type resumingLock struct {
	RegionLock
	resume func()
}

func (l resumingLock) Release() {
	l.RegionLock.Release()
	l.resume()
}

// ReadAt reads from one in-sync leg, balancing requests over them. Regions
// still marked in another slot's bitmap are read from the primary (first
// in-sync) leg, which is also the source of their resync, so every node
// sees the same bytes. A leg that fails the read is skipped, and the range
// is repaired on it from the leg that served it.
func (v *Volume) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.exit()
	if err := blockdev.CheckRange(v, len(p), off); err != nil {
		return err
	}
	w := v.view.Load()
	n := len(w.inSync)
	if n == 0 {
		return fmt.Errorf("%w: read at %d", ErrNoInSyncLeg, off)
	}
	r0, r1 := v.geo.RegionOf(off), v.geo.RegionOf(off+int64(len(p))-1)
	start := 0
	if n > 1 && !v.suspect(r0, r1) {
		start = v.pickReadLeg(w, off)
	}
	v.lastReadEnd.Store(off + int64(len(p)))
	var bad []int
	var lastErr error
	for k := 0; k < n; k++ {
		i := w.inSync[(start+k)%n]
		v.readsInFlight[i%MaxLegs].Add(1)
		err := w.devs[i].ReadAt(ctx, p, v.geo.DataOffset+off)
		v.readsInFlight[i%MaxLegs].Add(-1)
		if err == nil {
			v.lastReadLeg.Store(int64(i))
		}
		if err == nil {
			if len(bad) > 0 {
				v.repairRead(ctx, w, i, bad, off, len(p))
			}
			return nil
		}
		if !isLegFault(err) {
			return err
		}
		v.log.Warn("read failed, trying another leg", "leg", i, "offset", off, "error", err)
		bad = append(bad, i)
		lastErr = err
	}
	return fmt.Errorf("%w: read at %d: every leg failed: %v", ErrNoInSyncLeg, off, lastErr)
}

// ReadVerified reads like ReadAt, but takes a leg's copy only when valid
// accepts it (a caller that can tell good contents, such as a checksummed
// metadata block): a leg whose copy is damaged without an I/O error is
// passed over, and rewritten from the first leg whose copy is valid
// (every in-sync leg is read). It
// fails with ErrNoValidCopy when no in-sync leg holds a valid copy (p then
// holds the last copy read).
func (v *Volume) ReadVerified(ctx context.Context, p []byte, off int64, valid func([]byte) bool) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.exit()
	if err := blockdev.CheckRange(v, len(p), off); err != nil {
		return err
	}
	w := v.view.Load()
	if len(w.inSync) == 0 {
		return fmt.Errorf("%w: read at %d", ErrNoInSyncLeg, off)
	}
	// Every leg is read: the damaged copy may be on any of them.
	var bad []int
	goodLeg := -1
	buf := make([]byte, len(p))
	for _, i := range w.inSync {
		err := w.devs[i].ReadAt(ctx, buf, v.geo.DataOffset+off)
		if err != nil && !isLegFault(err) {
			return err
		}
		if err == nil && valid(buf) {
			if goodLeg < 0 {
				goodLeg = i
				copy(p, buf)
			}
			continue
		}
		bad = append(bad, i)
	}
	if goodLeg >= 0 {
		if len(bad) > 0 {
			v.repairRead(ctx, w, goodLeg, bad, off, len(p))
		}
		return nil
	}
	copy(p, buf)
	return fmt.Errorf("%w: %d bytes at %d", ErrNoValidCopy, len(p), off)
}

// pickReadLeg chooses where a read goes, as an index into w.inSync: a read
// continuing the previous one stays on that leg (a stream keeps one disk
// busy with sequential work), others go to the leg with the fewest reads
// in flight, taking turns on ties.
func (v *Volume) pickReadLeg(w *view, off int64) int {
	n := len(w.inSync)
	if off == v.lastReadEnd.Load() {
		last := int(v.lastReadLeg.Load())
		for k, i := range w.inSync {
			if i == last {
				return k
			}
		}
	}
	turn := int(v.rr.Add(1) % uint64(n))
	best, bestLoad := turn, int64(-1)
	for j := 0; j < n; j++ {
		k := (turn + j) % n
		load := v.readsInFlight[w.inSync[k]%MaxLegs].Load()
		if bestLoad < 0 || load < bestLoad {
			best, bestLoad = k, load
		}
	}
	return best
}

func (v *Volume) suspect(r0, r1 int64) bool {
	f := v.foreign.Load()
	if f == nil {
		return true
	}
	for r := r0; r <= r1; r++ {
		if f.Test(r) {
			return true
		}
	}
	return false
}

// repairRead rewrites [off, off+n) on the legs in bad with the contents of
// leg good, under the region lock so no write slips in between; a leg that
// cannot take the repair is failed.
func (v *Volume) repairRead(ctx context.Context, w *view, good int, bad []int, off int64, n int) {
	r0, r1 := v.geo.RegionOf(off), v.geo.RegionOf(off+int64(n)-1)
	lk, err := v.lockRegions(ctx, r0, r1, true, false)
	if err != nil {
		return
	}
	defer lk.Release()
	// Repair only from a leg the current table still counts in sync.
	if err := v.refreshTable(ctx); err != nil {
		return
	}
	if cur := v.view.Load(); cur != w {
		j := cur.table.Find(w.table.Legs[good].UUID)
		if j < 0 || cur.table.Legs[j].State != LegInSync || cur.devs[j] == nil {
			return
		}
	}
	buf := make([]byte, n)
	if err := w.devs[good].ReadAt(ctx, buf, v.geo.DataOffset+off); err != nil {
		return
	}
	if lk.Use() != nil {
		return
	}
	for _, i := range bad {
		err := w.devs[i].WriteAt(ctx, buf, v.geo.DataOffset+off)
		if err == nil {
			v.log.Info("repaired unreadable range from another leg", "leg", i, "from_leg", good, "offset", off, "length", n)
			continue
		}
		if isLegFault(err) {
			if ferr := v.failLeg(ctx, w.table.Legs[i].UUID, err); ferr != nil {
				v.log.Error("cannot record leg failure", "leg", i, "error", ferr)
			}
		}
	}
}

// WriteAt writes p to every in-sync and resyncing leg in parallel, after
// marking the regions in this slot's bitmap on disk. It returns nil when at
// least one in-sync leg has the data; legs that failed are marked failed
// cluster-wide. An error other than ctx's means the range's contents are
// unknown (blockdev.ErrWriteOutcomeUnknown semantics): never report such a
// write as safe to retry blindly.
func (v *Volume) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.exit()
	if v.cfg.Slot == NoSlot {
		return ErrNoSlot
	}
	if err := blockdev.CheckRange(v, len(p), off); err != nil {
		return err
	}
	return v.writeAt(ctx, p, off, false, v.cfg.CallerOrdersWrites)
}

// writeAt is WriteAt; recovery takes recovery region locks (RecoveryWriter);
// ordered takes the region locks of a caller that orders its overlapping
// writes itself (CallerOrdersWrites, OrderedWriter).
func (v *Volume) writeAt(ctx context.Context, p []byte, off int64, recovery, ordered bool) error {
	if err := v.writeLocked(ctx, p, off, recovery, ordered); err != nil {
		return err
	}
	// Outside the region lock: only the acknowledgement waits.
	return v.awaitFailureSeen(ctx, v.view.Load())
}

// RecoveryWriter is the volume as a device whose writes take recovery
// region locks (RegionRequest.Recovery), granted over the locks a dead
// node left behind: the recovery coordinator's journal replay writes the
// dead node's blocks in place, in regions whose locks (and checksum areas)
// it may still hold, before the lock manager releases them. Only the
// recovery coordinator writes through it, between fencing the dead node
// and releasing its locks. Reads, Flush, Size and BlockSize are the
// volume's; Close does nothing (the volume stays open).
func (v *Volume) RecoveryWriter() blockdev.Device {
	return writerView{v: v, recovery: true, ordered: v.cfg.CallerOrdersWrites}
}

// OrderedWriter is the volume as a device for a caller that never has two
// overlapping writes in flight anywhere in the cluster (the store orders
// them with its own locks): its writes take their regions' locks shared,
// as with CallerOrdersWrites, whatever the volume's Config says, so that
// they stay cached in the node and cost no lock request; copies of a
// region still wait for them. Writes through the volume itself keep the
// Config's locking (an exclusive lock on each written range by default),
// and conflict with these as they should. Reads (ReadVerified too), Flush,
// Size and BlockSize are the volume's; Close does nothing (the volume
// stays open).
func (v *Volume) OrderedWriter() blockdev.Device { return writerView{v: v, ordered: true} }

// writerView is the volume as a device whose writes lock as recovery
// and ordered say (see writeAt).
type writerView struct {
	v                 *Volume
	recovery, ordered bool
}

func (r writerView) ReadAt(ctx context.Context, p []byte, off int64) error {
	return r.v.ReadAt(ctx, p, off)
}

// ReadVerified is the volume's: a view keeps its read repair.
func (r writerView) ReadVerified(ctx context.Context, p []byte, off int64, valid func([]byte) bool) error {
	return r.v.ReadVerified(ctx, p, off, valid)
}

func (r writerView) WriteAt(ctx context.Context, p []byte, off int64) error {
	v := r.v
	if err := v.enter(); err != nil {
		return err
	}
	defer v.exit()
	if v.cfg.Slot == NoSlot {
		return ErrNoSlot
	}
	if err := blockdev.CheckRange(v, len(p), off); err != nil {
		return err
	}
	return v.writeAt(ctx, p, off, r.recovery, r.ordered)
}

func (r writerView) Flush(ctx context.Context) error { return r.v.Flush(ctx) }
func (r writerView) Size() int64                     { return r.v.Size() }
func (r writerView) BlockSize() int                  { return r.v.BlockSize() }
func (r writerView) Close() error                    { return nil }

// writeLocked writes p at off under the range's data lock. A plain write
// whose checksum holds cannot be had at once under the data lock lets the
// lock go, waits for them and starts again (see csumCache).
func (v *Volume) writeLocked(ctx context.Context, p []byte, off int64, recovery, ordered bool) error {
	r0, r1 := v.geo.RegionOf(off), v.geo.RegionOf(off+int64(len(p))-1)
	for {
		err := v.writeOnce(ctx, p, off, r0, r1, recovery, ordered)
		if !errors.Is(err, errMustWait) {
			return err
		}
		if err := v.csums.await(ctx, r0, r1); err != nil {
			return err
		}
	}
}

func (v *Volume) writeOnce(ctx context.Context, p []byte, off, r0, r1 int64, recovery, ordered bool) error {
	lk, err := v.lockWrite(ctx, off, int64(len(p)), r0, r1, recovery, ordered)
	if err != nil {
		return err
	}
	defer lk.Release()
	// Degraded once data went out without being known to have reached
	// every leg: the region stays marked until it is copied again.
	degraded := false
	defer func() { v.endWrite(r0, r1, degraded) }()
	// A write that starts where the previous one ended is probably part
	// of a stream: mark a few regions ahead to save bitmap flushes.
	var ahead int64
	if v.lastEnd.Swap(off+int64(len(p))) == off {
		ahead = markAhead
	}
	if err := v.markDirty(ctx, r0, r1, ahead); err != nil {
		return err
	}
	w := v.view.Load()
	if len(w.inSync) == 0 {
		return fmt.Errorf("%w: write at %d", ErrNoInSyncLeg, off)
	}
	// Last check before the data goes out: the lock (its holder's lease)
	// may have lapsed while the bitmap was marked.
	if err := lk.Use(); err != nil {
		return fmt.Errorf("mirror: write at %d under region lock (token %d): %w", off, lk.Token(), err)
	}
	// The caller's deadline bounds the waits up to here (locks, marks,
	// checksum holds). Past it the data goes to every leg or to none: a
	// deadline that passed between two legs' writes would leave them
	// disagreeing because a machine ran slow, and a slow leg is not a
	// failed one. The leg writes run under the legs' own bounds (the
	// iSCSI command timeout; the self-fence guard stops them at once).
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mirror: write at %d not started: %w", off, err)
	}
	var sent bool
	if v.csums != nil {
		sent, err = v.writeCached(ctx, w, p, off, r0, r1, recovery)
	} else {
		sent, err = true, v.writeUncached(ctx, w, p, off, r0, r1, recovery)
	}
	// A write that did not go out (it must wait for its checksum holds,
	// say) changed nothing.
	degraded = (sent && err != nil) || !w.allInSync()
	return err
}

// lockWrite locks what a write of length bytes at off needs. Normally the
// written range, exclusively: overlapping writes are serialised (so every
// leg ends with the same last write), copies of the region (which lock it
// whole) wait, disjoint writes go on. When the caller orders overlapping
// writes itself (ordered: CallerOrdersWrites, OrderedWriter), each region
// [r0, r1] shared, in region order: the same lock every write of the
// region asks for, which stays cached in the node between writes; only
// copies and the exclusive range locks of unordered writes conflict.
func (v *Volume) lockWrite(ctx context.Context, off, length, r0, r1 int64, recovery, ordered bool) (RegionLock, error) {
	if !ordered {
		return v.lockExclusive(ctx, r0, r1, RegionRequest{Volume: v.lockNS, Off: off, Length: length, Exclusive: true, Recovery: recovery})
	}
	if r0 == r1 {
		return v.lockOrdered(ctx, r0, recovery) // most writes: no set to build
	}
	set := make(lockSet, 0, r1-r0+1)
	for r := r0; r <= r1; r++ {
		lk, err := v.lockOrdered(ctx, r, recovery)
		if err != nil {
			set.Release()
			return nil, err
		}
		set = append(set, lk)
	}
	return set, nil
}

// lockOrdered takes region r's lock, shared, for one ordered write: a
// kept hold of the region for a plain write (dataHolds), the region's
// lock for this write alone otherwise.
func (v *Volume) lockOrdered(ctx context.Context, r int64, recovery bool) (RegionLock, error) {
	if v.dholds != nil && !recovery {
		return v.dholds.lock(ctx, r)
	}
	return v.lockRegions(ctx, r, r, false, recovery)
}

// lockSet is the region locks of one write, taken in region order.
type lockSet []RegionLock

// Token is the largest token of the set.
func (s lockSet) Token() uint64 {
	var t uint64
	for _, l := range s {
		t = max(t, l.Token())
	}
	return t
}

// Use checks every lock of the set.
func (s lockSet) Use() error {
	for _, l := range s {
		if err := l.Use(); err != nil {
			return err
		}
	}
	return nil
}

// Release releases the set in reverse order.
func (s lockSet) Release() {
	for i := len(s) - 1; i >= 0; i-- {
		s[i].Release()
	}
}

// writeCached patches the regions' cached checksum areas (memory, once
// their holds are taken) and writes the data to every writable leg, the
// last one from this goroutine. The regions' marks cover the areas until
// they are written back.
// sent says whether the data went out (a failed patch changes nothing).
func (v *Volume) writeCached(ctx context.Context, w *view, p []byte, off, r0, r1 int64, recovery bool) (sent bool, err error) {
	if err := v.csums.patch(ctx, p, off, r0, r1, recovery); err != nil {
		return false, err
	}
	ioctx := context.WithoutCancel(ctx) // see writeOnce
	n := len(w.writable)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k, i := range w.writable[:n-1] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = w.devs[i].WriteAt(ioctx, p, v.geo.DataOffset+off)
		}()
	}
	errs[n-1] = w.devs[w.writable[n-1]].WriteAt(ioctx, p, v.geo.DataOffset+off)
	wg.Wait()
	if w.settled(errs) {
		return true, nil
	}
	return true, v.settle(ctx, w, w.writable, errs, fmt.Sprintf("write at %d", off))
}

// settled says whether a write to every writable leg of w, with errs per
// leg, needs nothing of settle: no leg failed and an in-sync leg has the
// data (settle would return nil and fail no leg). It spares the common
// write settle's bookkeeping and the formatting of its message.
func (w *view) settled(errs []error) bool {
	inSync := false
	for k, i := range w.writable {
		if errs[k] != nil {
			return false
		}
		inSync = inSync || w.table.Legs[i].State == LegInSync
	}
	return inSync
}

// writeUncached is the write path for a RegionLocker that cannot hold
// locks: the data goes out at once; the checksum areas are read and
// patched meanwhile and follow. The region's mark covers any order in
// which data and checksums land.
func (v *Volume) writeUncached(ctx context.Context, w *view, p []byte, off, r0, r1 int64, recovery bool) error {
	n := len(w.writable)
	dataErrs, csErrs := make([]error, n), make([]error, n)
	ioctx := context.WithoutCancel(ctx) // see writeOnce
	var wg sync.WaitGroup
	for k, i := range w.writable {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dataErrs[k] = w.devs[i].WriteAt(ioctx, p, v.geo.DataOffset+off)
		}()
	}
	cerr := v.writeChecksums(ctx, w, p, off, r0, r1, recovery, csErrs)
	wg.Wait()
	if cerr != nil {
		// The data may be on the legs with stale checksums: the
		// region stays marked and degraded, so it is healed later.
		return cerr
	}
	errs := make([]error, n)
	for k := range errs {
		errs[k] = dataErrs[k]
		if errs[k] == nil {
			errs[k] = csErrs[k]
		}
	}
	return v.settle(ctx, w, w.writable, errs, fmt.Sprintf("write at %d", off))
}

// writeChecksums patches the checksum areas of regions [r0, r1] for a
// write of p at off and writes them to every writable leg (errors per leg
// into errs). Writers of disjoint ranges of a region share its checksum
// area, so the read-patch-write holds the region's checksum lock.
func (v *Volume) writeChecksums(ctx context.Context, w *view, p []byte, off, r0, r1 int64, recovery bool, errs []error) error {
	lk, err := v.locker.LockRegion(ctx, RegionRequest{Volume: v.csumNS(), Off: r0 * v.geo.RegionSize, Length: (r1 - r0 + 1) * v.geo.RegionSize, Exclusive: true, Recovery: recovery})
	if err != nil {
		return err
	}
	defer lk.Release()
	csums, err := v.updatedChecksums(ctx, w, p, off, r0, r1)
	if err != nil {
		return err
	}
	ioctx := context.WithoutCancel(ctx) // every leg or none, see writeOnce
	var wg sync.WaitGroup
	for k, i := range w.writable {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j, c := range csums {
				if err := w.devs[i].WriteAt(ioctx, c, v.geo.ChecksumOffsetOf(r0+int64(j))); err != nil {
					errs[k] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// updatedChecksums returns the checksum areas of regions [r0, r1] after
// writing p at off: read from an in-sync leg where the write covers a
// region only partly, then patched.
func (v *Volume) updatedChecksums(ctx context.Context, w *view, p []byte, off, r0, r1 int64) ([][]byte, error) {
	bs := int64(v.geo.BlockSize)
	out := make([][]byte, r1-r0+1)
	for r := r0; r <= r1; r++ {
		rs, re := r*v.geo.RegionSize, (r+1)*v.geo.RegionSize
		ws, we := max(rs, off), min(re, off+int64(len(p)))
		area := make([]byte, v.geo.ChecksumPerRegion)
		if ws > rs || we < re {
			if err := v.readChecksums(ctx, w, r, area); err != nil {
				return nil, err
			}
		}
		for b := ws; b < we; b += bs {
			putCsum(area, (b-rs)/bs, blockCsum(p[b-off:b-off+bs]))
		}
		out[r-r0] = area
	}
	return out, nil
}

func (v *Volume) readChecksums(ctx context.Context, w *view, r int64, area []byte) error {
	var last error
	for _, i := range w.inSync {
		err := w.devs[i].ReadAt(ctx, area, v.geo.ChecksumOffsetOf(r))
		if err == nil {
			return nil
		}
		if !isLegFault(err) {
			return err
		}
		last = err
	}
	return fmt.Errorf("%w: read checksums of region %d: %v", ErrNoInSyncLeg, r, last)
}

// Flush makes every completed write durable on every live leg.
func (v *Volume) Flush(ctx context.Context) error {
	if err := v.enter(); err != nil {
		return err
	}
	defer v.exit()
	w := v.view.Load()
	errs := parallel(w.writable, func(i int) error { return w.devs[i].Flush(ctx) })
	return v.settle(ctx, w, w.writable, errs, "flush")
}
