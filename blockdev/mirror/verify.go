package mirror

import (
	"bytes"
	"context"
	"fmt"
)

// Problem is one inconsistency Verify found, with its location.
type Problem struct {
	Leg    int    `json:"leg"`              // -1 when not about one leg
	Region int64  `json:"region"`           // -1 when not about a region
	Offset int64  `json:"offset,omitempty"` // volume offset of the block
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
	// PendingSlots, when set, are the slots whose write-intent marks
	// cover the region of a checksum or mismatch problem: until the
	// writer of such a slot has written its checksums back (a live node,
	// when asked for the region's lock) or its recovery has resynced the
	// region (a dead one), the legs and checksums of a marked region may
	// differ without damage.
	PendingSlots []int `json:"pending_slots,omitempty"`
}

func (p Problem) String() string {
	s := fmt.Sprintf("leg %d region %d offset %d: %s: %s", p.Leg, p.Region, p.Offset, p.Kind, p.Detail)
	if len(p.PendingSlots) > 0 {
		s += fmt.Sprintf(" (region marked by slot %v)", p.PendingSlots)
	}
	return s
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Generation uint64        `json:"generation"`
	Legs       []LegInfo     `json:"legs"`
	Dirty      map[int]int64 `json:"dirty_regions"` // slot -> marked regions
	Problems   []Problem     `json:"problems"`
	Notes      []string      `json:"notes"`
	Regions    int64         `json:"regions_checked"`
}

// Clean reports whether Verify found no inconsistency.
func (r VerifyReport) Clean() bool { return len(r.Problems) == 0 }

// Unmarked are the problems outside regions marked dirty (without
// PendingSlots): damage whatever the writers still hold or a recovery
// will do.
func (r VerifyReport) Unmarked() []Problem {
	var out []Problem
	for _, p := range r.Problems {
		if len(p.PendingSlots) == 0 {
			out = append(out, p)
		}
	}
	return out
}

// Verify is the volume's invariant checker, read-only: every live leg's
// superblock decodes and carries the table's generation; every bitmap block
// decodes; every in-sync leg holds the same data; every block matches its
// stored checksum on every in-sync leg. Regions marked dirty are listed
// as notes; checksum and mismatch problems within them carry the marking
// slots (Problem.PendingSlots): through the Volume's region locks, a live
// writer writes its checksums back before the region is compared, so a
// difference there is damage all the same; without the writers' locks
// (a check while the cluster is down, or not sharing its locks) it may be
// a write whose checksums had not been written back, which the marking
// slot's recovery resyncs. Tests run it after each scenario; shoalblk
// check runs it for operators.
func (v *Volume) Verify(ctx context.Context) (VerifyReport, error) {
	w := v.view.Load()
	rep := VerifyReport{Generation: w.table.Generation, Legs: w.table.Clone().Legs, Dirty: map[int]int64{}, Notes: v.Notes()}
	for i, l := range w.table.Legs {
		d := w.devs[i]
		if d == nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("leg %d (%s) is %s and was not checked", i, l.UUID, l.State))
			continue
		}
		sb, err := readSuperblock(ctx, d)
		switch {
		case err != nil:
			rep.Problems = append(rep.Problems, Problem{Leg: i, Region: -1, Kind: "superblock", Detail: err.Error()})
		case sb.Volume != v.vol || sb.Self != l.UUID:
			rep.Problems = append(rep.Problems, Problem{Leg: i, Region: -1, Kind: "superblock", Detail: fmt.Sprintf("identity %s/%s, want %s/%s", sb.Volume, sb.Self, v.vol, l.UUID)})
		case sb.Table.Generation != w.table.Generation:
			rep.Problems = append(rep.Problems, Problem{Leg: i, Region: -1, Kind: "superblock", Detail: fmt.Sprintf("generation %d, table is at %d", sb.Table.Generation, w.table.Generation)})
		}
		if l.State == LegResyncing {
			rep.Notes = append(rep.Notes, fmt.Sprintf("leg %d is resyncing (cursor %d of %d regions)", i, l.Cursor, v.geo.Regions))
		}
	}
	marked := map[int64][]int{} // region -> the slots that marked it
	for s := 0; s < v.geo.Slots; s++ {
		sbm, err := v.readSlotBitmap(ctx, w, s)
		if err != nil {
			return rep, err
		}
		for _, r := range sbm.Dirty.Regions() {
			marked[r] = append(marked[r], s)
		}
		for _, d := range sbm.Damaged {
			rep.Problems = append(rep.Problems, Problem{Leg: -1, Region: -1, Kind: "bitmap", Detail: fmt.Sprintf("slot %d: %s", s, d)})
		}
		if c := sbm.Dirty.Count(); c > 0 {
			rep.Dirty[s] = c
			rep.Notes = append(rep.Notes, fmt.Sprintf("slot %d has %d dirty regions pending recovery", s, c))
		}
	}
	legs := w.inSync
	data := make([][]byte, len(legs))
	cs := make([][]byte, len(legs))
	for k := range legs {
		data[k] = make([]byte, v.geo.RegionSize)
		cs[k] = make([]byte, v.geo.ChecksumPerRegion)
	}
	bs := int64(v.geo.BlockSize)
	for r := int64(0); r < v.geo.Regions; r++ {
		before := len(rep.Problems)
		if err := v.verifyRegion(ctx, w, r, data, cs, bs, &rep); err != nil {
			return rep, err
		}
		if slots := marked[r]; len(slots) > 0 {
			for i := before; i < len(rep.Problems); i++ {
				if k := rep.Problems[i].Kind; k == "checksum" || k == "mismatch" {
					rep.Problems[i].PendingSlots = slots
				}
			}
		}
		rep.Regions++
		if r%64 == 63 || r == v.geo.Regions-1 {
			v.report(Progress{Op: "verify", Done: r + 1, Total: v.geo.Regions, Copied: (r + 1) * v.geo.RegionSize})
		}
	}
	return rep, nil
}

func (v *Volume) verifyRegion(ctx context.Context, w *view, r int64, data, cs [][]byte, bs int64, rep *VerifyReport) error {
	// Exclusively: writers of a volume whose caller orders its writes
	// (CallerOrdersWrites) hold the region shared, and legs compared
	// mid-write would differ.
	lk, err := v.lockRegions(ctx, r, r, true, false)
	if err != nil {
		return err
	}
	defer lk.Release()
	lkCsum, err := v.lockChecksums(ctx, r, false, false)
	if err != nil {
		return err
	}
	defer lkCsum.Release()
	readOK := make([]bool, len(w.inSync))
	for k, i := range w.inSync {
		if err := w.devs[i].ReadAt(ctx, data[k], v.geo.DataOffset+r*v.geo.RegionSize); err != nil {
			rep.Problems = append(rep.Problems, Problem{Leg: i, Region: r, Offset: r * v.geo.RegionSize, Kind: "read", Detail: err.Error()})
			continue
		}
		if err := w.devs[i].ReadAt(ctx, cs[k], v.geo.ChecksumOffsetOf(r)); err != nil {
			rep.Problems = append(rep.Problems, Problem{Leg: i, Region: r, Offset: r * v.geo.RegionSize, Kind: "read", Detail: "checksums: " + err.Error()})
			continue
		}
		readOK[k] = true
	}
	for b := int64(0); b < v.geo.BlocksPerRegion(); b++ {
		lo, hi := b*bs, (b+1)*bs
		off := r*v.geo.RegionSize + lo
		first := -1
		for k, i := range w.inSync {
			if !readOK[k] {
				continue
			}
			if c := blockCsum(data[k][lo:hi]); c != getCsum(cs[k], b) {
				rep.Problems = append(rep.Problems, Problem{Leg: i, Region: r, Offset: off, Kind: "checksum", Detail: fmt.Sprintf("block checksum %08x, stored %08x", c, getCsum(cs[k], b))})
			}
			if first < 0 {
				first = k
				continue
			}
			if !bytes.Equal(data[k][lo:hi], data[first][lo:hi]) {
				rep.Problems = append(rep.Problems, Problem{Leg: i, Region: r, Offset: off, Kind: "mismatch", Detail: fmt.Sprintf("differs from leg %d", w.inSync[first])})
			}
		}
	}
	return nil
}

// Status is a snapshot for operators.
type Status struct {
	Volume     string        `json:"volume"`
	ClusterID  string        `json:"cluster_id"`
	Size       int64         `json:"size"`
	RegionSize int64         `json:"region_size"`
	Slots      int           `json:"slots"`
	Generation uint64        `json:"generation"`
	Legs       []LegStatus   `json:"legs"`
	Dirty      map[int]int64 `json:"dirty_regions"`
	Progress   *Progress     `json:"progress,omitempty"`
	// Notes: stale leg tables and legs left out (see Volume.Notes).
	Notes []string `json:"notes,omitempty"`
}

// LegStatus is one leg in Status.
type LegStatus struct {
	Index  int      `json:"index"`
	UUID   string   `json:"uuid"`
	Addr   string   `json:"addr"`
	State  LegState `json:"state"`
	Full   bool     `json:"full_resync,omitempty"`
	Cursor int64    `json:"resync_cursor,omitempty"`
	Online bool     `json:"online"`
}

// Status reports legs, states, dirty regions per slot and resync progress.
func (v *Volume) Status(ctx context.Context) (Status, error) {
	w := v.view.Load()
	st := Status{Volume: v.vol.String(), ClusterID: v.cluster, Size: v.Size(), RegionSize: v.geo.RegionSize, Slots: v.geo.Slots, Generation: w.table.Generation, Dirty: map[int]int64{}, Notes: v.Notes()}
	for i, l := range w.table.Legs {
		st.Legs = append(st.Legs, LegStatus{Index: i, UUID: l.UUID.String(), Addr: l.Addr, State: l.State, Full: l.Full, Cursor: l.Cursor, Online: w.devs[i] != nil})
	}
	for s := 0; s < v.geo.Slots; s++ {
		sbm, err := v.readSlotBitmap(ctx, w, s)
		if err != nil {
			return st, err
		}
		if c := sbm.Dirty.Count(); c > 0 {
			st.Dirty[s] = c
		}
	}
	if p, ok := v.CurrentProgress(); ok {
		st.Progress = &p
	}
	return st, nil
}
