package mirror

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// TestLegChangesWhileWriting: two nodes write without pause while a leg is
// added and synced, another failed, returned and resynced, and one
// removed. Every acknowledged write survives and the legs agree.
func TestLegChangesWhileWriting(t *testing.T) {
	ctx := context.Background()
	seed := seedFor(t)
	r := newRig(t, 2, 2)
	nodes := []*node{r.open(0), r.open(1)}
	m := newModel()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes atomic.Int64
	for s, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr := rand.New(rand.NewPCG(seed, uint64(s)))
			for i := 0; i < 20000 && !stop.Load(); i++ {
				nb := 1 + wr.IntN(16)
				off := wr.Int64N(n.vol.Size()/testBS-16) * testBS
				p := randBlock(wr, nb*testBS)
				unlock, _ := r.locker.Lock(ctx, "app", off, int64(len(p)), true)
				err := n.vol.WriteAt(ctx, p, off)
				if err == nil {
					m.ack(off, p, nb)
				} else {
					m.unknown(off, p, nb)
				}
				unlock()
				if err != nil {
					t.Errorf("node %d write: %v", s, err)
					return
				}
				writes.Add(1)
			}
		}()
	}
	// Every node must see a leg change before a resync copies; the
	// settle time guarantees that in production, the test makes sure.
	refreshAll := func() {
		for _, n := range nodes {
			if err := n.vol.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	a := nodes[0].vol
	addr := fmt.Sprintf("mem://added-%d", seed)
	newLeg := r.addLeg(addr)
	idx, err := a.AddLeg(ctx, blockdev.NewFaulty(newLeg), addr, false)
	if err != nil {
		t.Fatal(err)
	}
	refreshAll()
	if rep, err := a.Resync(ctx); err != nil || len(rep.Legs) != 1 || !rep.Legs[0].Full {
		t.Fatalf("resync of new leg: %+v %v", rep, err)
	}
	if a.Table().Legs[idx].State != LegInSync {
		t.Fatal("new leg not in sync")
	}
	refreshAll()
	if err := a.FailLeg(ctx, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	refreshAll()
	if err := a.ReturnLeg(ctx, 0, nil); err != nil {
		t.Fatalf("return leg 0: %v", err)
	}
	refreshAll()
	if rep, err := a.Resync(ctx); err != nil || len(rep.Legs) != 1 || rep.Legs[0].Full {
		t.Fatalf("resync of returning leg: %+v %v", rep, err)
	}
	refreshAll()
	if err := a.RemoveLeg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	refreshAll()
	time.Sleep(20 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if writes.Load() == 0 {
		t.Fatal("no writes happened")
	}
	t.Logf("%d writes during leg changes", writes.Load())
	if len(a.Table().Legs) != 2 {
		t.Fatalf("table %+v", a.Table())
	}
	m.check(t, nodes[1].vol)
	for _, n := range nodes {
		if err := n.vol.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Verify through the remaining legs: leg 0 and the added one.
	cfg := FastConfig(NoSlot)
	cfg.Legs, cfg.Store = []blockdev.Device{r.legs[0], newLeg}, r.store
	v, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rep, err := v.Verify(ctx)
	if err != nil || !rep.Clean() {
		t.Fatalf("verify: %v %+v", err, rep.Problems)
	}
	if len(rep.Dirty) != 0 {
		t.Fatalf("dirty regions after clean close: %v", rep.Dirty)
	}
	m.check(t, v)
}

// TestResyncResumes: an interrupted resync leaves a cursor in the leg table
// and the next run continues from it.
func TestResyncResumes(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	newLeg, _ := r.addResyncingLeg("mem://resume")
	stopAt := int64(40)
	cctx, cancel := context.WithCancel(ctx)
	tool, err := r.tryOpen(NoSlot, func(c *Config) {
		c.Progress = func(p Progress) {
			if p.Op == "resync" && p.Done >= stopAt {
				cancel()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tool.vol.Resync(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted resync: %v", err)
	}
	cur := tool.vol.Table().Legs[2]
	if cur.State != LegResyncing || cur.Cursor < stopAt {
		t.Fatalf("after interruption: %+v", cur)
	}
	tool.vol.Close()
	tool = r.open(NoSlot)
	rep, err := tool.vol.Resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := tool.vol.Geometry().Regions
	if rep.Legs[0].From != cur.Cursor || rep.Legs[0].Regions != total-cur.Cursor {
		t.Fatalf("resumed %+v, cursor was %d of %d", rep.Legs[0], cur.Cursor, total)
	}
	tool.vol.Close()
	cfg := FastConfig(NoSlot)
	cfg.Legs, cfg.Store = []blockdev.Device{r.legs[0], r.legs[1], newLeg}, r.store
	v, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if rep, err := v.Verify(ctx); err != nil || !rep.Clean() {
		t.Fatalf("verify: %v %+v", err, rep.Problems)
	}
}

// TestResyncRateLimited: with a fake clock, a resync limited to one region
// per second copies no faster than the clock moves.
func TestResyncRateLimited(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 1, 1)
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	var done atomic.Int64
	cfg := FastConfig(NoSlot)
	cfg.Legs = []blockdev.Device{r.legs[0]}
	cfg.Store, cfg.Clock, cfg.ResyncRate = r.store, fake, testRegion
	cfg.Logger = testlog.New(t, "rate")
	cfg.Progress = func(p Progress) { done.Store(p.Done) }
	v, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	newLeg := r.addLeg("mem://rate")
	if _, err := v.AddLeg(ctx, newLeg, "mem://rate", false); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	finished, finish := context.WithCancel(context.Background())
	defer finish()
	go func() {
		_, err := v.Resync(ctx)
		finish()
		res <- err
	}()
	// The volume's refresh ticker is always pending; a second waiter is
	// the resync sleeping on the clock (unless it has finished).
	waitSleeper := func() {
		bctx, cancel := context.WithTimeout(finished, 5*time.Second)
		defer cancel()
		_ = fake.BlockUntilContext(bctx, 2)
	}
	waitSleeper()
	fake.Advance(cfg.SettleTime)
	for sec := int64(1); sec <= 5; sec++ {
		waitSleeper()
		if d := done.Load(); d > sec {
			t.Fatalf("after %ds of clock %d regions copied", sec-1, d)
		}
		fake.Advance(time.Second)
	}
	if d := done.Load(); d < 3 {
		t.Fatalf("resync stalled: %d regions after 5 clock seconds", d)
	}
	// Let it finish.
	for i := 0; i < 1000; i++ {
		select {
		case err := <-res:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		waitSleeper()
		fake.Advance(10 * time.Second)
	}
	t.Fatal("resync did not finish")
}
