package mirror

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
)

func TestWriteReadVerify(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 3, 2)
	n := r.open(0)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 50; i++ {
		blocks := 1 + rng.IntN(40)
		off := rng.Int64N(n.vol.Size()/testBS-int64(blocks)) * testBS
		p := randBlock(rng, blocks*testBS)
		if err := n.vol.WriteAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(p))
		for k := 0; k < 3; k++ { // reads rotate over the legs
			if err := n.vol.ReadAt(ctx, got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, p) {
				t.Fatalf("write %d: read back differs", i)
			}
		}
	}
	if n.vol.DirtyRegions() == 0 {
		t.Fatal("writes left no region marked")
	}
	if err := n.vol.WriteAt(ctx, make([]byte, 100), 0); !errors.Is(err, blockdev.ErrUnaligned) {
		t.Fatalf("unaligned write: %v", err)
	}
	if err := n.vol.WriteAt(ctx, make([]byte, testBS), n.vol.Size()); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Fatalf("write past end: %v", err)
	}
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
	rep := r.verifyClean()
	if len(rep.Dirty) != 0 {
		t.Fatalf("clean close left dirty regions: %v", rep.Dirty)
	}
	r.legsIdentical(n.vol.Geometry(), 0, 1, 2)
}

func TestBitsClearedLazily(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	n := r.open(0)
	defer n.vol.Close()
	if err := n.vol.WriteAt(ctx, make([]byte, testBS), 0); err != nil {
		t.Fatal(err)
	}
	if n.vol.DirtyRegions() == 0 {
		t.Fatalf("dirty %d", n.vol.DirtyRegions())
	}
	for i := 0; i < 200 && n.vol.DirtyRegions() != 0; i++ {
		if err := n.vol.clean(ctx, false); err != nil {
			t.Fatal(err)
		}
		<-n.vol.clk.After(n.vol.cfg.ClearDelay / 4)
	}
	if n.vol.DirtyRegions() != 0 {
		t.Fatal("bit never cleared")
	}
	st, err := n.vol.Status(ctx)
	if err != nil || len(st.Dirty) != 0 {
		t.Fatalf("on-disk bitmap still dirty: %v %v", st.Dirty, err)
	}
}

func TestReadErrorRepaired(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	n := r.open(0)
	p := bytes.Repeat([]byte{7}, 4*testBS)
	if err := n.vol.WriteAt(ctx, p, 8*testBS); err != nil {
		t.Fatal(err)
	}
	g := n.vol.Geometry()
	// Leg 1 loses the block (bad sector on one path); every read must
	// still succeed and leg 1 gets the data back.
	r.legs[1].Poke(g.DataOffset+8*testBS, make([]byte, testBS))
	n.paths[1].FailReads(g.DataOffset+8*testBS, testBS)
	got := make([]byte, len(p))
	for i := 0; i < 4; i++ {
		if err := n.vol.ReadAt(ctx, got, 8*testBS); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Fatal("read returned wrong data")
		}
	}
	if !bytes.Equal(r.legs[1].Peek(g.DataOffset+8*testBS, testBS), p[:testBS]) {
		t.Fatal("bad block was not repaired on leg 1")
	}
	if st := n.vol.Table().Legs[1].State; st != LegInSync {
		t.Fatalf("leg 1 is %s after a repairable read error", st)
	}
	n.vol.Close()
}

func TestLegFailureAndReturn(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 2)
	a, b := r.open(0), r.open(1)
	rng := rand.New(rand.NewPCG(3, 4))
	m := newModel()
	write := func(n *node, i int) {
		off := int64(rng.IntN(int(n.vol.Size()/testBS)-4)) * testBS
		p := randBlock(rng, 4*testBS)
		if err := n.vol.WriteAt(ctx, p, off); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		m.ack(off, p, 4)
	}
	for i := 0; i < 20; i++ {
		write(a, i)
	}
	// Leg 1 dies for node a mid-write: node a fails it for the cluster.
	a.paths[1].SetOffline(true)
	for i := 0; i < 20; i++ {
		write(a, i)
	}
	if st := a.vol.Table().Legs[1].State; st != LegFailed {
		t.Fatalf("leg 1 is %s", st)
	}
	if err := b.vol.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.vol.Table().Legs[1].State; st != LegFailed {
		t.Fatalf("node b sees leg 1 as %s", st)
	}
	for i := 0; i < 20; i++ {
		write(b, i)
	}
	if err := a.vol.FailLeg(ctx, 0); !errors.Is(err, ErrLastInSyncLeg) {
		t.Fatalf("failing the last in-sync leg: %v", err)
	}
	m.check(t, a.vol)
	m.check(t, b.vol)
	// The leg comes back and is resynced only where it missed writes.
	a.paths[1].SetOffline(false)
	if err := a.vol.ReturnLeg(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := a.vol.Resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := a.vol.Geometry().Regions
	if len(rep.Legs) != 1 || rep.Legs[0].Regions == 0 || rep.Legs[0].Regions >= total {
		t.Fatalf("resync copied %+v of %d regions", rep.Legs, total)
	}
	if st := a.vol.Table().Legs[1].State; st != LegInSync {
		t.Fatalf("leg 1 is %s after resync", st)
	}
	b.vol.Refresh(ctx)
	for i := 0; i < 10; i++ {
		write(b, i)
	}
	m.check(t, a.vol)
	a.vol.Close()
	b.vol.Close()
	if rep := r.verifyClean(); len(rep.Dirty) != 0 {
		t.Fatalf("dirty after clean close: %v", rep.Dirty)
	}
	r.legsIdentical(a.vol.Geometry(), 0, 1)
}

func TestScrubRepairsCorruption(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 3, 1)
	n := r.open(0)
	rng := rand.New(rand.NewPCG(5, 6))
	p := randBlock(rng, int(n.vol.Size()/4))
	if err := n.vol.WriteAt(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	n.vol.Close()
	g := n.vol.Geometry()
	// Corrupt data on leg 2 and a checksum on leg 1.
	r.legs[2].Poke(g.DataOffset+5*testBS, bytes.Repeat([]byte{0xee}, testBS))
	r.legs[2].Poke(g.DataOffset+3*testRegion, bytes.Repeat([]byte{0xdd}, 3*testBS))
	r.legs[1].Poke(g.ChecksumOffsetOf(2), []byte{1, 2, 3, 4})
	rep := func() VerifyReport {
		tool := r.open(NoSlot)
		defer tool.vol.Close()
		rep, err := tool.vol.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}()
	if rep.Clean() {
		t.Fatal("verify missed injected corruption")
	}
	tool := r.open(NoSlot)
	dry, err := tool.vol.Scrub(ctx, ScrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Repairs) != 5 {
		t.Fatalf("scrub found %d bad blocks, want 5: %+v", len(dry.Repairs), dry.Repairs)
	}
	fixed, err := tool.vol.Scrub(ctx, ScrubOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fixed.Repairs {
		if !f.Repaired || f.Decided != "checksum" || (f.Leg == 0) {
			t.Fatalf("unexpected repair %+v", f)
		}
		switch {
		case f.Leg == 2 && f.Kind == "data", f.Leg == 1 && f.Kind == "checksum" && f.Region == 2:
		default:
			t.Fatalf("repair at the wrong place: %+v", f)
		}
	}
	tool.vol.Close()
	r.verifyClean()
	r.legsIdentical(g, 0, 1, 2)
	got := make([]byte, len(p))
	n2 := r.open(0)
	defer n2.vol.Close()
	if err := n2.vol.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("data differs after scrub (%v)", err)
	}
}

func TestForeignStaleMissingLegs(t *testing.T) {
	ctx := context.Background()
	r1 := newRig(t, 2, 1)
	r2 := newRig(t, 1, 1)
	_, err := Open(ctx, Config{Legs: []blockdev.Device{r1.legs[0], r2.legs[0]}, RefreshInterval: 1, SettleTime: 2, Slot: 0})
	if !errors.Is(err, ErrForeignLeg) {
		t.Fatalf("foreign leg: %v", err)
	}
	_, err = Open(ctx, Config{Legs: []blockdev.Device{r1.legs[0]}, RefreshInterval: 1, SettleTime: 2, Slot: 0})
	if !errors.Is(err, ErrMissingLeg) {
		t.Fatalf("missing leg: %v", err)
	}
	blank, _ := blockdev.NewMem(testLeg, testBS)
	if _, err := Open(ctx, Config{Legs: []blockdev.Device{blank}, RefreshInterval: 1, SettleTime: 2}); !errors.Is(err, ErrBadSuperblock) {
		t.Fatalf("blank leg: %v", err)
	}
	if _, err := Format(ctx, []blockdev.Device{r1.legs[0]}, FormatOptions{RegionSize: testRegion, Slots: 1}); err == nil {
		t.Fatal("format over a volume without force succeeded")
	}
	// Fail leg 1, then present it alone with the cluster's store: stale.
	n := r1.open(0)
	if err := n.vol.FailLeg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	n.vol.Close()
	cfg := FastConfig(0)
	cfg.Legs, cfg.Store = []blockdev.Device{r1.legs[1]}, r1.store
	cfg.AllowMissingLegs = true
	if _, err := Open(ctx, cfg); !errors.Is(err, ErrStaleLeg) && !errors.Is(err, ErrLastInSyncLeg) {
		t.Fatalf("stale leg alone: %v", err)
	}
	// Without the store, the stale leg's superblock still loses to the
	// newer one on leg 0 when both are given.
	cfg = FastConfig(0)
	cfg.Legs = []blockdev.Device{r1.legs[1], r1.legs[0]}
	v, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if st := v.Table().Legs[1].State; st != LegFailed {
		t.Fatalf("stale leg is %s", st)
	}
	if _, err := FitGeometry(testRegion, testBS, 1, 1<<20); !errors.Is(err, ErrBadGeometry) {
		t.Fatalf("tiny leg: %v", err)
	}
}
