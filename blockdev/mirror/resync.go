package mirror

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// pacer limits copying to ResyncRate bytes per second on the volume's
// clock.
type pacer struct {
	v     *Volume
	start time.Time
	bytes int64
}

func (v *Volume) newPacer() *pacer { return &pacer{v: v, start: v.now()} }

func (p *pacer) add(ctx context.Context, n int64) error {
	p.bytes += n
	rate := p.v.cfg.ResyncRate
	if rate <= 0 {
		return ctx.Err()
	}
	due := p.start.Add(time.Duration(float64(p.bytes) / float64(rate) * float64(time.Second)))
	if wait := due.Sub(p.v.now()); wait > 0 {
		select {
		case <-p.v.clk.After(wait):
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

func (v *Volume) report(p Progress) {
	v.progress.Store(&p)
	if v.cfg.Progress != nil {
		v.cfg.Progress(p)
	}
}

// copyRegion makes region r identical on every leg in targets, copying from
// the first in-sync leg that reads it, and rewrites the region's checksums
// on the source and the targets from the copied data. It holds the region
// lock exclusively meanwhile.
func (v *Volume) copyRegion(ctx context.Context, r int64, targets func(w *view) []int, buf []byte, recovery bool) (int, error) {
	if v.cfg.ReadOnly {
		return 0, ErrReadOnly
	}
	lk, err := v.lockRegions(ctx, r, r, true, recovery)
	if err != nil {
		return 0, err
	}
	defer lk.Release()
	lkCsum, err := v.lockChecksums(ctx, r, true, recovery)
	if err != nil {
		return 0, err
	}
	defer lkCsum.Release()
	// Copy only with the current leg table: a node that has not yet
	// seen a leg fail would copy that leg's stale data over the others.
	// Under the region lock no write can slip in between.
	if err := v.refreshTable(ctx); err != nil {
		return 0, fmt.Errorf("mirror: refresh leg table before copying region %d: %w", r, err)
	}
	w := v.view.Load()
	src := -1
	for _, i := range w.inSync {
		err := w.devs[i].ReadAt(ctx, buf, v.geo.DataOffset+r*v.geo.RegionSize)
		if err == nil {
			src = i
			break
		}
		if !isLegFault(err) {
			return 0, err
		}
		v.log.Warn("resync source read failed, trying another leg", "leg", i, "region", r, "error", err)
	}
	if src < 0 {
		return 0, fmt.Errorf("%w: region %d unreadable on every in-sync leg", ErrNoInSyncLeg, r)
	}
	cs := regionChecksums(v.geo, buf)
	dst := []int{}
	for _, i := range targets(w) {
		if i != src {
			dst = append(dst, i)
		}
	}
	// The checksums go to every in-sync leg as well: they hold the same
	// data, and a writer that briefly read checksums from a leg it did
	// not yet know had failed may have left stale entries there.
	isDst := map[int]bool{}
	for _, i := range dst {
		isDst[i] = true
	}
	all := append([]int{src}, dst...)
	for _, i := range w.inSync {
		if i != src && !isDst[i] {
			all = append(all, i)
		}
	}
	if err := lk.Use(); err != nil {
		return 0, fmt.Errorf("mirror: copy region %d under region lock (token %d): %w", r, lk.Token(), err)
	}
	errs := parallel(all, func(i int) error {
		if isDst[i] {
			if err := w.devs[i].WriteAt(ctx, buf, v.geo.DataOffset+r*v.geo.RegionSize); err != nil {
				return err
			}
		}
		return w.devs[i].WriteAt(ctx, cs, v.geo.ChecksumOffsetOf(r))
	})
	return len(dst), v.settle(ctx, w, all, errs, fmt.Sprintf("resync region %d", r))
}

// RecoverReport says what Recover did.
type RecoverReport struct {
	Slot     int      `json:"slot"`
	Regions  int64    `json:"regions"`  // regions resynced
	Cleared  bool     `json:"cleared"`  // the slot's bitmap was cleared
	Damaged  []string `json:"damaged"`  // bitmap blocks that failed to decode
	Duration string   `json:"duration"` // wall time on the volume's clock
}

// Recover merges slot's write-intent bitmap from the legs and resyncs every
// region it marks, copying from the primary leg to all others under the
// region locks. Call it for a node that crashed (after it was fenced) or
// for a slot whose node is known to be gone; Open calls it for its own
// slot. The slot's bitmap is cleared only when every leg is in sync;
// otherwise the marks stay as the record of what the missing legs lack.
// Interrupted recovery is safe to run again.
func (v *Volume) Recover(ctx context.Context, slot int) (RecoverReport, error) {
	return v.recover(ctx, slot, false)
}

// RecoverFenced is Recover for the slot of a node the recovery coordinator
// has fenced: its region locks are recovery locks (RegionRequest.Recovery),
// granted over the locks the dead node left behind, which stay gated to
// everyone else until the recovery releases them.
func (v *Volume) RecoverFenced(ctx context.Context, slot int) (RecoverReport, error) {
	return v.recover(ctx, slot, true)
}

func (v *Volume) recover(ctx context.Context, slot int, recovery bool) (RecoverReport, error) {
	rep := RecoverReport{Slot: slot}
	if v.cfg.ReadOnly {
		return rep, ErrReadOnly
	}
	if slot < 0 || slot >= v.geo.Slots {
		return rep, fmt.Errorf("mirror: recover: slot %d out of range (volume has %d)", slot, v.geo.Slots)
	}
	if slot == v.cfg.Slot && v.opened.Load() {
		// Its marks cover this node's own writes in flight.
		return rep, fmt.Errorf("mirror: recover: slot %d is this volume's own live slot", slot)
	}
	start := v.now()
	w := v.view.Load()
	sbm, err := v.readSlotBitmap(ctx, w, slot)
	if err != nil {
		return rep, err
	}
	rep.Damaged = sbm.Damaged
	regions := sbm.Dirty.Regions()
	if len(regions) > 0 {
		v.log.Info("recovering slot", "recover_slot", slot, "regions", len(regions))
		// Everyone must read these regions from the primary until done.
		if f := v.foreign.Load(); f != nil && slot != v.cfg.Slot {
			nf := f.Clone()
			nf.Merge(sbm.Dirty)
			v.foreign.Store(nf)
		}
	}
	n, err := v.recoverRegions(ctx, slot, regions, recovery)
	rep.Regions = n
	if err != nil {
		return rep, err
	}
	w = v.view.Load()
	if len(regions) > 0 && w.allInSync() {
		// The copies are durable before the marks that cover them go (as
		// clean does for a live node's marks): a disk may keep unflushed
		// writes in any order, and a power loss that kept the cleared
		// bitmap but not a copy would leave the legs differing unmarked.
		errs := parallel(w.writable, func(i int) error { return w.devs[i].Flush(ctx) })
		if err := v.settle(ctx, w, w.writable, errs, "flush before clearing a recovered slot"); err != nil {
			return rep, err
		}
		w = v.view.Load()
	}
	if len(regions) > 0 || len(sbm.Damaged) > 0 {
		if w.allInSync() {
			if err := v.clearSlot(ctx, slot); err != nil {
				return rep, err
			}
			rep.Cleared = true
		} else if slot == v.cfg.Slot {
			v.stateMu.Lock()
			v.in.adopt(sbm.Dirty, v.now())
			v.stateMu.Unlock()
		}
	} else {
		rep.Cleared = true
	}
	if sbm.Open && slot != v.cfg.Slot && !(rep.Cleared && (len(regions) > 0 || len(sbm.Damaged) > 0)) {
		// The slot's node is gone: its open-volume marker goes, its
		// marks (if any are left) stay.
		blocks := make([]int64, v.geo.BitmapBlocksPerSlot)
		for i := range blocks {
			blocks[i] = int64(i)
		}
		image := sbm.Dirty
		if rep.Cleared {
			image = NewBitmap(v.geo.Regions)
		}
		if err := v.writeBitmapBlocks(ctx, slot, image, blocks, true); err != nil {
			return rep, err
		}
	}
	if err := v.refreshForeign(ctx); err != nil {
		return rep, err
	}
	rep.Duration = v.now().Sub(start).String()
	if rep.Regions > 0 {
		v.log.Info("slot recovered", "recover_slot", slot, "regions", rep.Regions, "cleared", rep.Cleared)
	}
	return rep, nil
}

// recoverWorkers is how many regions a recovery copies at once when
// copying is not rate-limited. A failover waits for the dead node's
// regions (each costs two lock requests, a leg table read and a region
// read and write, mostly waiting): copying a few at once shortens it.
// More do not: in a failover of about 20 marked 1 MiB regions over iSCSI
// legs, 16 at once took as long as 4 (about 100 ms), each copy then
// waiting on the legs' reads and writes.
const recoverWorkers = 4

// recoverRegions copies regions from the primary to the other legs for
// recover, several at once unless ResyncRate paces the copying, and
// returns how many it copied. Regions are independent: each copy holds its
// own region's lock. After a failed copy no further region starts; the
// copies under way finish (one interrupted could fail a healthy leg over
// a write of unknown outcome).
func (v *Volume) recoverRegions(ctx context.Context, slot int, regions []int64, recovery bool) (int64, error) {
	workers := min(recoverWorkers, len(regions))
	if v.cfg.ResyncRate > 0 {
		workers = min(1, len(regions))
	}
	var (
		mu       sync.Mutex
		next     int
		done     int64
		firstErr error
		wg       sync.WaitGroup
	)
	pace := v.newPacer()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, v.geo.RegionSize)
			for {
				mu.Lock()
				if next >= len(regions) || firstErr != nil {
					mu.Unlock()
					return
				}
				r := regions[next]
				next++
				mu.Unlock()
				_, err := v.copyRegion(ctx, r, func(w *view) []int { return w.writable }, buf, recovery)
				if err != nil {
					err = fmt.Errorf("mirror: recover slot %d region %d: %w", slot, r, err)
				}
				mu.Lock()
				if err == nil {
					done++
					v.report(Progress{Op: "recover", Done: done, Total: int64(len(regions)), Copied: done * v.geo.RegionSize})
					err = pace.add(ctx, v.geo.RegionSize)
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return done, firstErr
}

// ResyncReport says what Resync did per leg.
type ResyncReport struct {
	Legs []LegResync `json:"legs"`
}

// LegResync is one leg's resync.
type LegResync struct {
	Leg     int       `json:"leg"`
	UUID    uuid.UUID `json:"uuid"`
	Full    bool      `json:"full"`
	Regions int64     `json:"regions"` // regions copied
	From    int64     `json:"resumed_from"`
}

// Resync brings every resyncing leg in sync: a new leg gets every region, a
// returning leg only the regions marked in any slot's bitmap (the writes it
// missed). It first waits SettleTime so every node writes to the leg, then
// copies under region locks at ResyncRate, checkpointing a cursor in the
// leg table so an interrupted resync resumes where it stopped.
func (v *Volume) Resync(ctx context.Context) (ResyncReport, error) {
	var rep ResyncReport
	if v.cfg.ReadOnly {
		return rep, ErrReadOnly
	}
	w := v.view.Load()
	var todo []uuid.UUID
	for _, l := range w.table.Legs {
		if l.State == LegResyncing {
			todo = append(todo, l.UUID)
		}
	}
	if len(todo) == 0 {
		return rep, nil
	}
	select {
	case <-v.clk.After(v.cfg.SettleTime):
	case <-ctx.Done():
		return rep, ctx.Err()
	}
	for _, id := range todo {
		lr, err := v.resyncLeg(ctx, id)
		rep.Legs = append(rep.Legs, lr)
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func (v *Volume) resyncLeg(ctx context.Context, id uuid.UUID) (LegResync, error) {
	w := v.view.Load()
	li := w.table.Find(id)
	lr := LegResync{Leg: li, UUID: id}
	if li < 0 || w.table.Legs[li].State != LegResyncing {
		return lr, nil
	}
	if w.devs[li] == nil {
		return lr, fmt.Errorf("mirror: resync leg %d: device not available", li)
	}
	info := w.table.Legs[li]
	lr.Full, lr.From = info.Full, info.Cursor
	var regions []int64
	if info.Full {
		for r := info.Cursor; r < v.geo.Regions; r++ {
			regions = append(regions, r)
		}
	} else {
		all := NewBitmap(v.geo.Regions)
		for s := 0; s < v.geo.Slots; s++ {
			sbm, err := v.readSlotBitmap(ctx, w, s)
			if err != nil {
				return lr, err
			}
			all.Merge(sbm.Dirty)
		}
		for _, r := range all.Regions() {
			if r >= info.Cursor {
				regions = append(regions, r)
			}
		}
	}
	v.log.Info("resyncing leg", "leg", li, "leg_uuid", id, "full", info.Full, "regions", len(regions), "from", info.Cursor)
	buf := make([]byte, v.geo.RegionSize)
	pace := v.newPacer()
	lastCheckpoint := v.now()
	target := func(w *view) []int {
		if j := w.table.Find(id); j >= 0 && w.table.Legs[j].State == LegResyncing && w.devs[j] != nil {
			return []int{j}
		}
		return nil
	}
	for k, r := range regions {
		if len(target(v.view.Load())) == 0 {
			return lr, fmt.Errorf("mirror: resync leg %d: leg left the resyncing state", li)
		}
		if _, err := v.copyRegion(ctx, r, target, buf, false); err != nil {
			v.checkpoint(context.Background(), id, r)
			return lr, fmt.Errorf("mirror: resync leg %d region %d: %w", li, r, err)
		}
		lr.Regions++
		v.report(Progress{Op: "resync", Leg: fmt.Sprint(li), Done: int64(k + 1), Total: int64(len(regions)), Copied: int64(k+1) * v.geo.RegionSize})
		if err := pace.add(ctx, v.geo.RegionSize); err != nil {
			v.checkpoint(context.Background(), id, r+1)
			return lr, err
		}
		if v.now().Sub(lastCheckpoint) >= time.Second {
			v.checkpoint(ctx, id, r+1)
			lastCheckpoint = v.now()
		}
	}
	if err := v.flushResyncing(ctx, id); err != nil {
		return lr, fmt.Errorf("mirror: resync leg %d: %w", li, err)
	}
	err := v.updateTable(ctx, func(t *LegTable) error {
		j := t.Find(id)
		if j < 0 || t.Legs[j].State != LegResyncing {
			return fmt.Errorf("mirror: resync leg %d: leg left the resyncing state", li)
		}
		t.Legs[j].State, t.Legs[j].Full, t.Legs[j].Cursor = LegInSync, false, 0
		return nil
	})
	if err == nil {
		v.log.Info("leg in sync", "leg", li, "leg_uuid", id, "regions", lr.Regions)
	}
	return lr, err
}

// checkpoint records how far a resync got, so a later run resumes there.
func (v *Volume) checkpoint(ctx context.Context, id uuid.UUID, next int64) {
	if err := v.flushResyncing(ctx, id); err != nil {
		v.log.Warn("resync checkpoint not recorded", "error", err)
		return
	}
	err := v.updateTable(ctx, func(t *LegTable) error {
		if j := t.Find(id); j >= 0 && t.Legs[j].State == LegResyncing && next > t.Legs[j].Cursor {
			t.Legs[j].Cursor = next
		}
		return nil
	})
	if err != nil {
		v.log.Warn("resync checkpoint not recorded", "error", err)
	}
}

// flushResyncing flushes the resyncing leg id, so that the copies made to
// it are durable before the leg table says so (a resume cursor past them,
// or the leg in sync): a disk may keep unflushed writes in any order, and
// the table in etcd outlives a power loss of the leg. A flush that fails
// fails the leg.
func (v *Volume) flushResyncing(ctx context.Context, id uuid.UUID) error {
	w := v.view.Load()
	j := w.table.Find(id)
	if j < 0 || w.table.Legs[j].State != LegResyncing || w.devs[j] == nil {
		return fmt.Errorf("mirror: leg %s left the resyncing state", id)
	}
	err := w.devs[j].Flush(ctx)
	if err != nil && isLegFault(err) {
		if ferr := v.failLeg(ctx, id, err); ferr != nil {
			v.log.Error("cannot record leg failure", "leg", j, "error", ferr)
		}
	}
	if err != nil {
		return fmt.Errorf("mirror: flush of resyncing leg %d: %w", j, err)
	}
	return nil
}

// CurrentProgress is the last progress report of a long operation, if any.
func (v *Volume) CurrentProgress() (Progress, bool) {
	p := v.progress.Load()
	if p == nil {
		return Progress{}, false
	}
	return *p, true
}
