package mirror

import (
	"slices"
	"time"
)

// intent is the deterministic core of this node's write-intent bitmap: which
// regions are marked on disk, which have writes in flight, and which may be
// cleared. It does no I/O and takes no locks; the volume drives it under
// stateMu and performs the bitmap writes it asks for.
type intent struct {
	disk    *Bitmap // regions marked (or being marked) on disk
	durable *Bitmap // regions whose mark is known to be on disk
	// degraded regions were written while some leg was not in sync (or
	// with a view that may have been stale); before their marks are
	// cleared they are copied once more from the primary to every leg.
	degraded *Bitmap
	inflight map[int64]int
	seq      map[int64]uint64
	last     map[int64]time.Time
	// cleared holds when regions were cleared, for recall long: a writer
	// that paused a little longer than the clear delay comes back to the
	// same regions, and a random one would pay a bitmap write and flush
	// for each of them, one after another. The next mark takes those of
	// its own bitmap blocks along (no further I/O), as it does the
	// regions ahead of a sequential writer. recalled holds the write
	// sequence of such a region when it was taken along: cleared again
	// without having been written, it is not taken along again.
	cleared  map[int64]time.Time
	recalled map[int64]uint64
	recall   time.Duration
}

// newIntent is the intent of a volume of regions; recall is how long a
// cleared region is taken along by the next mark (0: never).
func newIntent(regions int64, recall time.Duration) *intent {
	return &intent{
		disk: NewBitmap(regions), durable: NewBitmap(regions), degraded: NewBitmap(regions),
		inflight: map[int64]int{}, seq: map[int64]uint64{}, last: map[int64]time.Time{},
		cleared: map[int64]time.Time{}, recalled: map[int64]uint64{}, recall: recall,
	}
}

// begin records a write to regions [r0, r1] and reports whether any of them
// still needs its mark written to disk before the data may go.
func (in *intent) begin(r0, r1 int64, now time.Time) (needMark bool) {
	for r := r0; r <= r1; r++ {
		in.inflight[r]++
		in.seq[r]++
		in.last[r] = now
		if !in.durable.Test(r) {
			needMark = true
		}
	}
	return needMark
}

// toMark returns the regions of [r0, r1] whose mark is not yet durable and
// records them as marked in the disk image, and the bitmap blocks to write.
// Regions up to ahead past r1 are marked too (a sequential writer will get
// there next), and count as just written so they are not cleared at once.
// The regions of other writes in flight that still wait for their marks go
// along (a group commit: one bitmap write and flush for all of them).
func (in *intent) toMark(r0, r1, ahead int64, now time.Time) (regions []int64, blocks []int64) {
	end := min(r1+ahead, in.disk.Len()-1)
	for r := r0; r <= end; r++ {
		if !in.durable.Test(r) {
			if r > r1 {
				in.last[r] = now
			}
			in.disk.Set(r)
			regions = append(regions, r)
			blocks = appendBlock(blocks, r/RegionsPerBitmapBlock)
		}
	}
	for r := range in.inflight {
		if (r < r0 || r > end) && !in.durable.Test(r) {
			in.disk.Set(r)
			regions = append(regions, r)
			blocks = appendBlock(blocks, r/RegionsPerBitmapBlock)
		}
	}
	// Regions cleared lately whose bitmap block is written anyway.
	for r, at := range in.cleared {
		if now.Sub(at) > in.recall || in.disk.Test(r) {
			delete(in.cleared, r)
			continue
		}
		if !slices.Contains(blocks, r/RegionsPerBitmapBlock) {
			continue
		}
		delete(in.cleared, r)
		in.disk.Set(r)
		in.last[r] = now // not cleared at once
		in.recalled[r] = in.seq[r]
		regions = append(regions, r)
	}
	return regions, blocks
}

// marked records that the marks of regions are on disk.
func (in *intent) marked(regions []int64) {
	for _, r := range regions {
		in.durable.Set(r)
	}
}

// unmark undoes toMark after the bitmap write failed everywhere.
func (in *intent) unmark(regions []int64) {
	for _, r := range regions {
		if !in.durable.Test(r) {
			in.disk.Clear(r)
		}
	}
}

// end records that a write to [r0, r1] finished (successfully or not);
// degraded says it did not go to every leg of the table.
func (in *intent) end(r0, r1 int64, now time.Time, degraded bool) {
	for r := r0; r <= r1; r++ {
		if degraded {
			in.degraded.Set(r)
		}
		if in.inflight[r]--; in.inflight[r] <= 0 {
			delete(in.inflight, r)
		}
		in.last[r] = now
	}
}

// candidate is a region that may be cleared if nothing touches it before
// the data is flushed.
type candidate struct {
	region int64
	seq    uint64
}

// cleanable lists durable marks with no write in flight whose last write is
// at least delay old (all of them when force is set).
func (in *intent) cleanable(now time.Time, delay time.Duration, force bool) []candidate {
	var out []candidate
	for _, r := range in.durable.Regions() {
		if in.inflight[r] > 0 || in.degraded.Test(r) {
			continue
		}
		if !force && now.Sub(in.last[r]) < delay {
			continue
		}
		out = append(out, candidate{r, in.seq[r]})
	}
	return out
}

// clear unmarks the candidates that stayed idle and unchanged, returning
// the bitmap blocks to rewrite. A cleared region is remembered for recall
// (see cleared) unless it was taken along by a mark and never written.
func (in *intent) clear(cands []candidate, now time.Time) (blocks []int64) {
	for _, c := range cands {
		if in.inflight[c.region] > 0 || in.seq[c.region] != c.seq {
			continue
		}
		in.disk.Clear(c.region)
		in.durable.Clear(c.region)
		if s, ok := in.recalled[c.region]; !ok || s != c.seq {
			in.cleared[c.region] = now
		}
		delete(in.recalled, c.region)
		delete(in.seq, c.region)
		delete(in.last, c.region)
		blocks = appendBlock(blocks, c.region/RegionsPerBitmapBlock)
	}
	return blocks
}

// toHeal lists idle degraded regions with their sequence numbers.
func (in *intent) toHeal() []candidate {
	var out []candidate
	for _, r := range in.degraded.Regions() {
		if in.inflight[r] == 0 {
			out = append(out, candidate{r, in.seq[r]})
		}
	}
	return out
}

// healed drops the degraded flag of c's region unless it was written
// again meanwhile.
func (in *intent) healed(c candidate) {
	if in.inflight[c.region] == 0 && in.seq[c.region] == c.seq {
		in.degraded.Clear(c.region)
	}
}

// adopt takes regions found marked on disk (left after recovery that could
// not clear them) as durable marks.
func (in *intent) adopt(bm *Bitmap, now time.Time) {
	for _, r := range bm.Regions() {
		in.disk.Set(r)
		in.durable.Set(r)
		in.degraded.Set(r)
		in.last[r] = now
	}
}

func appendBlock(blocks []int64, b int64) []int64 {
	if n := len(blocks); n > 0 && blocks[n-1] == b {
		return blocks
	}
	for _, x := range blocks {
		if x == b {
			return blocks
		}
	}
	return append(blocks, b)
}
