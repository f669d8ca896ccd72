package mirror

import (
	"slices"
	"testing"
	"time"
)

// TestIntentRecallsClearedRegions drives the intent core step by step: a
// region cleared a moment ago is marked again along with the next mark of
// its bitmap block (no bitmap block more is written), one taken along
// that way and cleared again unwritten is not taken along a second time,
// and one cleared longer ago than the recall time is forgotten.
func TestIntentRecallsClearedRegions(t *testing.T) {
	const recall = 4 * time.Second
	t0 := time.Unix(1000, 0)
	in := newIntent(2*RegionsPerBitmapBlock, recall)
	write := func(r int64, now time.Time) []int64 {
		t.Helper()
		var regions, blocks []int64
		if in.begin(r, r, now) {
			regions, blocks = in.toMark(r, r, 0, now)
			in.marked(regions)
		}
		in.end(r, r, now, false)
		if len(blocks) > 1 {
			t.Fatalf("mark of region %d wrote bitmap blocks %v", r, blocks)
		}
		slices.Sort(regions)
		return regions
	}
	clearIdle := func(now time.Time) {
		t.Helper()
		in.clear(in.cleanable(now, time.Second, false), now)
	}
	// Regions 1, 2 (bitmap block 0) and one of block 1 are written and
	// cleared.
	far := int64(RegionsPerBitmapBlock + 5)
	for _, r := range []int64{1, 2, far} {
		write(r, t0)
	}
	clearIdle(t0.Add(2 * time.Second))
	if in.durable.Count() != 0 {
		t.Fatalf("%d regions still marked after the clear", in.durable.Count())
	}
	// The writer comes back to region 1: region 2 is taken along (same
	// block), the region of block 1 is not (its block is not written).
	if got := write(1, t0.Add(3*time.Second)); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("mark of region 1 took regions %v; want [1 2]", got)
	}
	if !in.durable.Test(2) || in.durable.Test(far) {
		t.Fatal("region 2 not marked again, or the other block's region was")
	}
	// Region 2 was not written: cleared again, it is not taken along again.
	clearIdle(t0.Add(6 * time.Second))
	if got := write(1, t0.Add(7*time.Second)); !slices.Equal(got, []int64{1}) {
		t.Fatalf("second mark of region 1 took regions %v; want [1]", got)
	}
	// Past the recall time a cleared region is forgotten.
	write(far+1, t0.Add(7*time.Second))
	if in.durable.Test(far) {
		t.Fatalf("region %d, cleared %v before, was taken along", far, 5*time.Second)
	}
}
