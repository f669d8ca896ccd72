package mirror

import (
	"context"
	"fmt"

	"github.com/shoal-ha/shoal/blockdev"
)

// SlotBitmap is what the legs say about one slot's dirty regions.
type SlotBitmap struct {
	Dirty *Bitmap
	// Damaged lists "leg L block B: error" for bitmap blocks that failed
	// to decode; the regions they cover are counted dirty.
	Damaged []string
	// Open: some block carries the open-volume marker.
	Open bool
}

// readSlotBitmap merges slot's bitmap from every in-sync leg: a region is
// dirty when any leg has its bit set or a damaged block covers it.
func (v *Volume) readSlotBitmap(ctx context.Context, w *view, slot int) (SlotBitmap, error) {
	out := SlotBitmap{Dirty: NewBitmap(v.geo.Regions)}
	buf := make([]byte, BitmapBlockSize)
	for _, i := range w.inSync {
		for b := int64(0); b < v.geo.BitmapBlocksPerSlot; b++ {
			if err := w.devs[i].ReadAt(ctx, buf, v.geo.BitmapBlockOffset(slot, b)); err != nil {
				if ctx.Err() != nil {
					return out, ctx.Err()
				}
				out.Damaged = append(out.Damaged, fmt.Sprintf("leg %d block %d: %v", i, b, err))
				MarkBlockRange(out.Dirty, b)
				continue
			}
			bb, err := DecodeBitmapBlock(buf, v.vol, slot, b)
			if err != nil {
				out.Damaged = append(out.Damaged, fmt.Sprintf("leg %d block %d: %v", i, b, err))
				MarkBlockRange(out.Dirty, b)
				continue
			}
			bb.MergeInto(out.Dirty)
			out.Open = out.Open || bb.Open
		}
	}
	return out, nil
}

// refreshForeign rebuilds the set of regions marked in other slots'
// bitmaps; reads of those regions all go to the primary leg, so every node
// returns the same bytes until they are resynced.
func (v *Volume) refreshForeign(ctx context.Context) error {
	w := v.view.Load()
	all := NewBitmap(v.geo.Regions)
	for s := 0; s < v.geo.Slots; s++ {
		if s == v.cfg.Slot {
			continue
		}
		sbm, err := v.readSlotBitmap(ctx, w, s)
		if err != nil {
			return err
		}
		all.Merge(sbm.Dirty)
	}
	v.foreign.Store(all)
	return nil
}

// writeBitmapBlocks writes this slot's blocks from the disk image to every
// writable leg and flushes them.
func (v *Volume) writeBitmapBlocks(ctx context.Context, slot int, image *Bitmap, blocks []int64, flush bool) error {
	if len(blocks) == 0 {
		return nil
	}
	if v.cfg.ReadOnly {
		return ErrReadOnly
	}
	w := v.view.Load()
	// The own slot's blocks carry the open-volume marker until Close.
	open := slot == v.cfg.Slot && !v.closed.Load()
	enc := make([][]byte, len(blocks))
	for k, b := range blocks {
		enc[k] = encodeBitmapBlock(v.vol, slot, b, image, open)
	}
	errs := parallel(w.writable, func(i int) error {
		for k, b := range blocks {
			if err := w.devs[i].WriteAt(ctx, enc[k], v.geo.BitmapBlockOffset(slot, b)); err != nil {
				return err
			}
		}
		if flush {
			return w.devs[i].Flush(ctx)
		}
		return nil
	})
	return v.settle(ctx, w, w.writable, errs, "write bitmap")
}

// recallFactor x ClearDelay is how long a cleared region is taken along
// by the next mark of its bitmap block (see intent.cleared).
const recallFactor = 4

// markDirty makes sure regions [r0, r1] are marked on disk before data is
// written to them.
func (v *Volume) markDirty(ctx context.Context, r0, r1, ahead int64) error {
	now := v.now() // outside stateMu, which every write takes twice
	v.stateMu.Lock()
	need := v.in.begin(r0, r1, now)
	v.stateMu.Unlock()
	if !need {
		return nil
	}
	v.bmWriteMu.Lock()
	defer v.bmWriteMu.Unlock()
	v.stateMu.Lock()
	regions, blocks := v.in.toMark(r0, r1, ahead, v.now())
	image := v.in.disk.Clone()
	v.stateMu.Unlock()
	if err := v.writeBitmapBlocks(ctx, v.cfg.Slot, image, blocks, true); err != nil {
		v.stateMu.Lock()
		v.in.unmark(regions)
		v.stateMu.Unlock()
		return err
	}
	v.stateMu.Lock()
	v.in.marked(regions)
	v.stateMu.Unlock()
	return nil
}

func (v *Volume) endWrite(r0, r1 int64, degraded bool) {
	now := v.now()
	v.stateMu.Lock()
	v.in.end(r0, r1, now, degraded)
	v.stateMu.Unlock()
}

// heal copies every idle degraded region from the primary to all legs
// (data and checksums) once every leg is in sync, so their marks can be
// cleared. Writes done while a leg was out, or by a node whose view of the
// legs lagged, cannot leave the legs or checksums disagreeing.
func (v *Volume) heal(ctx context.Context) error {
	if !v.view.Load().allInSync() {
		return nil
	}
	v.stateMu.Lock()
	cands := v.in.toHeal()
	v.stateMu.Unlock()
	if len(cands) == 0 {
		return nil
	}
	buf := make([]byte, v.geo.RegionSize)
	for _, c := range cands {
		if !v.view.Load().allInSync() {
			return nil
		}
		if _, err := v.copyRegion(ctx, c.region, func(w *view) []int { return w.writable }, buf, false); err != nil {
			return err
		}
		v.stateMu.Lock()
		v.in.healed(c)
		v.stateMu.Unlock()
	}
	v.log.Info("regions written while degraded resynced", "regions", len(cands))
	return nil
}

// clean clears the marks of idle regions once their data is durable on
// every leg. It does nothing while any leg is not in sync: the marks are
// then the record of what that leg is missing. force clears every idle
// mark regardless of ClearDelay (used by Close).
func (v *Volume) clean(ctx context.Context, force bool) error {
	if v.cfg.Slot == NoSlot {
		return nil
	}
	// Healing takes region locks, so it runs before bmWriteMu is held
	// (writers take bmWriteMu while holding region locks).
	if err := v.heal(ctx); err != nil {
		return err
	}
	v.bmWriteMu.Lock()
	defer v.bmWriteMu.Unlock()
	w := v.view.Load()
	if !w.allInSync() {
		return nil
	}
	v.stateMu.Lock()
	cands := v.in.cleanable(v.now(), v.cfg.ClearDelay, force)
	v.stateMu.Unlock()
	if len(cands) == 0 {
		return nil
	}
	if v.csums != nil {
		// The cached checksum areas reach the legs before the marks
		// that cover them go.
		regions := make([]int64, len(cands))
		for k, c := range cands {
			regions[k] = c.region
		}
		if err := v.csums.writeBackRegions(ctx, regions); err != nil {
			return err
		}
	}
	errs := parallel(w.writable, func(i int) error { return w.devs[i].Flush(ctx) })
	if err := v.settle(ctx, w, w.writable, errs, "flush before clearing bitmap"); err != nil {
		return err
	}
	if w2 := v.view.Load(); w2 != w && !w2.allInSync() {
		return nil
	}
	v.stateMu.Lock()
	blocks := v.in.clear(cands, v.now())
	image := v.in.disk.Clone()
	v.stateMu.Unlock()
	return v.writeBitmapBlocks(ctx, v.cfg.Slot, image, blocks, force)
}

// clearSlot writes an empty bitmap for slot (after its regions were
// resynced on every leg).
func (v *Volume) clearSlot(ctx context.Context, slot int) error {
	blocks := make([]int64, v.geo.BitmapBlocksPerSlot)
	for i := range blocks {
		blocks[i] = int64(i)
	}
	return v.writeBitmapBlocks(ctx, slot, NewBitmap(v.geo.Regions), blocks, true)
}

// writeOpenMarker writes every block of this slot's bitmap from its disk
// image, with the open-volume marker set (open) or cleared (after Close
// began).
func (v *Volume) writeOpenMarker(ctx context.Context) error {
	v.bmWriteMu.Lock()
	defer v.bmWriteMu.Unlock()
	v.stateMu.Lock()
	image := v.in.disk.Clone()
	v.stateMu.Unlock()
	blocks := make([]int64, v.geo.BitmapBlocksPerSlot)
	for i := range blocks {
		blocks[i] = int64(i)
	}
	return v.writeBitmapBlocks(ctx, v.cfg.Slot, image, blocks, true)
}

// OpenSlots reads the open-volume markers of a leg: the node slots whose
// node has the volume open (or crashed with it open and was not yet
// recovered). Blocks that do not decode are skipped.
func OpenSlots(ctx context.Context, d blockdev.Device) ([]int, error) {
	sb, err := readSuperblock(ctx, d)
	if err != nil {
		return nil, err
	}
	var out []int
	buf := make([]byte, BitmapBlockSize)
	for s := 0; s < sb.Geometry.Slots; s++ {
		for i := int64(0); i < sb.Geometry.BitmapBlocksPerSlot; i++ {
			if err := d.ReadAt(ctx, buf, sb.Geometry.BitmapBlockOffset(s, i)); err != nil {
				return out, err
			}
			if bb, err := DecodeBitmapBlock(buf, sb.Volume, s, i); err == nil && bb.Open {
				out = append(out, s)
				break
			}
		}
	}
	return out, nil
}

// DirtyRegions reports how many regions this slot has marked.
func (v *Volume) DirtyRegions() int64 {
	v.stateMu.Lock()
	defer v.stateMu.Unlock()
	return v.in.disk.Count()
}

var _ blockdev.Device = (*Volume)(nil)
