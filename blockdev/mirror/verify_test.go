package mirror

import (
	"bytes"
	"context"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// A node dies with the checksums of its last write not written back (they
// are cached while it holds the region): a check of the legs without the
// writers' locks finds the write's blocks differing from their checksums,
// each problem carrying the slot that marked the region, which that
// slot's recovery resyncs (Problem.PendingSlots); damage in a region
// nobody marked carries none (VerifyReport.Unmarked).
func TestVerifyTellsProblemsPendingRecovery(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 2)
	n := r.open(0)
	const written, damaged = 1, 3 // regions
	if err := n.vol.WriteAt(ctx, bytes.Repeat([]byte{0xab}, 4*testBS), written*testRegion+2*testBS); err != nil {
		t.Fatal(err)
	}
	// The node dies: the legs as they are now, checked by a tool of its
	// own locks, as shoalblk check without --lock-dir.
	all := blockdev.CrashOptions{KeepProbability: 1}
	var clones []blockdev.Device
	for _, m := range r.legs {
		clones = append(clones, m.CrashClone(all))
	}
	geo := n.vol.geo
	if err := clones[0].WriteAt(ctx, bytes.Repeat([]byte{0x01}, testBS), geo.DataOffset+damaged*testRegion); err != nil {
		t.Fatal(err)
	}
	cfg := FastConfig(NoSlot)
	cfg.Legs, cfg.Store, cfg.Locker, cfg.Logger = clones, r.store, NewLocalLocker(), testlog.New(t, "check")
	v, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rep, err := v.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pending := 0
	for _, p := range rep.Problems {
		switch {
		case p.Region == written && len(p.PendingSlots) == 1 && p.PendingSlots[0] == 0:
			pending++
		case p.Region == damaged && len(p.PendingSlots) == 0:
		default:
			t.Errorf("unexpected problem: %s", p)
		}
	}
	if pending == 0 {
		t.Errorf("no problem pending slot 0's recovery in region %d: %v", written, rep.Problems)
	}
	unmarked := rep.Unmarked()
	if len(unmarked) == 0 {
		t.Fatalf("the damage in region %d, which nobody marked, is not reported: %v", damaged, rep.Problems)
	}
	for _, p := range unmarked {
		if p.Region != damaged {
			t.Errorf("unmarked problem outside region %d: %s", damaged, p)
		}
	}
	// The node lives on after all: closing writes its checksums back, and
	// the rig's check at the end finds the legs clean.
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
}
