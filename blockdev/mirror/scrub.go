package mirror

import (
	"bytes"
	"context"
	"fmt"
)

// Repair is one block a scrub found wrong on one leg.
type Repair struct {
	Leg    int    `json:"leg"`
	Region int64  `json:"region"`
	Offset int64  `json:"offset"` // volume byte offset of the block
	Kind   string `json:"kind"`   // "data" or "checksum"
	// Decided says how the right copy was chosen: "checksum" (the copy
	// matching its stored checksum, by most votes) or "primary" (no copy
	// matched any checksum; the primary's data was kept).
	Decided  string `json:"decided"`
	FromLeg  int    `json:"from_leg"`
	Repaired bool   `json:"repaired"`
}

// ScrubReport lists what a scrub found.
type ScrubReport struct {
	Regions int64    `json:"regions"`
	Blocks  int64    `json:"blocks"`
	Repairs []Repair `json:"repairs"`
}

// ScrubOptions select what Scrub does.
type ScrubOptions struct {
	Repair bool  // fix what is found; otherwise only report
	From   int64 // first region (to resume)
}

// Scrub compares the in-sync legs region by region under the region locks.
// For each block it decides by checksum which copy is right: a copy whose
// data matches the checksum stored beside it, preferring the one most legs
// agree with; when no copy matches, the primary's data is kept. With Repair
// it rewrites the wrong data and checksums.
func (v *Volume) Scrub(ctx context.Context, opts ScrubOptions) (ScrubReport, error) {
	var rep ScrubReport
	if opts.Repair && v.cfg.ReadOnly {
		return rep, ErrReadOnly
	}
	w := v.view.Load()
	n := len(w.inSync)
	if n == 0 {
		return rep, ErrNoInSyncLeg
	}
	data := make([][]byte, n)
	cs := make([][]byte, n)
	for k := range data {
		data[k] = make([]byte, v.geo.RegionSize)
		cs[k] = make([]byte, v.geo.ChecksumPerRegion)
	}
	pace := v.newPacer()
	for r := opts.From; r < v.geo.Regions; r++ {
		if err := v.scrubRegion(ctx, r, opts.Repair, data, cs, &rep); err != nil {
			return rep, err
		}
		rep.Regions++
		v.report(Progress{Op: "scrub", Done: r + 1 - opts.From, Total: v.geo.Regions - opts.From, Copied: (r + 1 - opts.From) * v.geo.RegionSize})
		if err := pace.add(ctx, v.geo.RegionSize); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func (v *Volume) scrubRegion(ctx context.Context, r int64, repair bool, data, cs [][]byte, rep *ScrubReport) error {
	// Exclusively even without repair: writers of a volume whose caller
	// orders its writes (CallerOrdersWrites) hold the region shared.
	lk, err := v.lockRegions(ctx, r, r, true, false)
	if err != nil {
		return err
	}
	defer lk.Release()
	lkCsum, err := v.lockChecksums(ctx, r, repair, false)
	if err != nil {
		return err
	}
	defer lkCsum.Release()
	if repair {
		if err := v.refreshTable(ctx); err != nil {
			return fmt.Errorf("mirror: refresh leg table before repairing region %d: %w", r, err)
		}
	}
	w := v.view.Load()
	legs := w.inSync
	if len(legs) > len(data) {
		legs = legs[:len(data)]
	}
	for k, i := range legs {
		if err := w.devs[i].ReadAt(ctx, data[k], v.geo.DataOffset+r*v.geo.RegionSize); err != nil {
			return fmt.Errorf("mirror: scrub region %d leg %d: %w", r, i, err)
		}
		if err := w.devs[i].ReadAt(ctx, cs[k], v.geo.ChecksumOffsetOf(r)); err != nil {
			return fmt.Errorf("mirror: scrub region %d leg %d checksums: %w", r, i, err)
		}
	}
	bs := int64(v.geo.BlockSize)
	for b := int64(0); b < v.geo.BlocksPerRegion(); b++ {
		rep.Blocks++
		lo, hi := b*bs, (b+1)*bs
		good, decided := decideBlock(len(legs), func(k int) []byte { return data[k][lo:hi] }, func(k int) uint32 { return getCsum(cs[k], b) })
		want := blockCsum(data[good][lo:hi])
		for k, i := range legs {
			dataBad := !bytes.Equal(data[k][lo:hi], data[good][lo:hi])
			csBad := getCsum(cs[k], b) != want
			if !dataBad && !csBad {
				continue
			}
			kind := "checksum"
			if dataBad {
				kind = "data"
			}
			fix := Repair{Leg: i, Region: r, Offset: r*v.geo.RegionSize + lo, Kind: kind, Decided: decided, FromLeg: legs[good]}
			if repair {
				if dataBad {
					if err := w.devs[i].WriteAt(ctx, data[good][lo:hi], v.geo.DataOffset+r*v.geo.RegionSize+lo); err != nil {
						return fmt.Errorf("mirror: scrub repair region %d leg %d: %w", r, i, err)
					}
				}
				putCsum(cs[k], b, want)
				if err := w.devs[i].WriteAt(ctx, cs[k], v.geo.ChecksumOffsetOf(r)); err != nil {
					return fmt.Errorf("mirror: scrub repair region %d leg %d checksums: %w", r, i, err)
				}
				fix.Repaired = true
				v.log.Warn("scrub repaired block", "leg", i, "offset", fix.Offset, "kind", kind, "decided", decided)
			}
			rep.Repairs = append(rep.Repairs, fix)
		}
	}
	return nil
}

// decideBlock picks the right copy among n legs' copies of one block: among
// the copies that match their own stored checksum, the one whose checksum
// the most legs' data or stored checksums agree with (ties: lowest leg);
// if none matches, copy 0 (the primary). It is the scrub's deterministic
// core.
func decideBlock(n int, data func(k int) []byte, stored func(k int) uint32) (good int, how string) {
	best, bestVotes := -1, -1
	for k := 0; k < n; k++ {
		c := blockCsum(data(k))
		if c != stored(k) {
			continue
		}
		votes := 0
		for j := 0; j < n; j++ {
			if blockCsum(data(j)) == c {
				votes++
			}
			if stored(j) == c {
				votes++
			}
		}
		if votes > bestVotes {
			best, bestVotes = k, votes
		}
	}
	if best < 0 {
		return 0, "primary"
	}
	return best, "checksum"
}
