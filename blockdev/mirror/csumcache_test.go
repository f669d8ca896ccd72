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
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// areaCounter counts a leg path's reads and writes of the checksum areas.
type areaCounter struct {
	blockdev.Device
	g             Geometry
	reads, writes atomic.Int64
}

func (a *areaCounter) inArea(off int64) bool {
	return off >= a.g.ChecksumOffset && off < a.g.DataOffset
}

func (a *areaCounter) ReadAt(ctx context.Context, p []byte, off int64) error {
	if a.inArea(off) {
		a.reads.Add(1)
	}
	return a.Device.ReadAt(ctx, p, off)
}

func (a *areaCounter) WriteAt(ctx context.Context, p []byte, off int64) error {
	if a.inArea(off) {
		a.writes.Add(1)
	}
	return a.Device.WriteAt(ctx, p, off)
}

func (a *areaCounter) Close() error { return nil }

// TestChecksumCacheSavesAreaIO: with a RegionHolder, writes to a few
// regions read each region's checksum area once and write none until the
// areas are written back; without the cache every write reads and
// rewrites its area. Either way the volume verifies clean afterwards.
func TestChecksumCacheSavesAreaIO(t *testing.T) {
	ctx := context.Background()
	const writes = 200
	for _, cache := range []int64{0, 64 << 10} {
		r := newRig(t, 2, 1)
		var counters []*areaCounter
		n, err := r.tryOpen(0, func(c *Config) {
			c.ChecksumCache = cache
			c.ClearDelay = time.Hour // no write-back by clean meanwhile
			for i, d := range c.Legs {
				g, _ := NewGeometry(testRegion, testBS, 1, 1)
				ac := &areaCounter{Device: d, g: g}
				counters = append(counters, ac)
				c.Legs[i] = ac
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, ac := range counters {
			ac.g = n.vol.Geometry()
			ac.reads.Store(0)
			ac.writes.Store(0)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		m := newModel()
		for i := 0; i < writes; i++ {
			off := int64(rng.IntN(4*testRegion/testBS)) * testBS
			p := randBlock(rng, testBS)
			if err := n.vol.WriteAt(ctx, p, off); err != nil {
				t.Fatal(err)
			}
			m.ack(off, p, 1)
		}
		var reads, wr int64
		for _, ac := range counters {
			reads += ac.reads.Load()
			wr += ac.writes.Load()
		}
		if cache == 0 {
			if wr < 2*writes {
				t.Fatalf("uncached: %d area writes for %d writes on 2 legs", wr, writes)
			}
		} else {
			if reads > 4 || wr != 0 {
				t.Fatalf("cached: %d area reads and %d area writes for %d writes to 4 regions", reads, wr, writes)
			}
			if c, d := n.vol.csums.cached(); c != 4 || d != 4 {
				t.Fatalf("cached: %d areas cached, %d dirty; want 4 and 4", c, d)
			}
		}
		m.check(t, n.vol)
		if err := n.vol.Close(); err != nil {
			t.Fatal(err)
		}
		if n.vol.DirtyRegions() != 0 {
			t.Fatalf("cache %d: %d regions still marked after Close", cache, n.vol.DirtyRegions())
		}
		r.verifyClean()
	}
}

// TestChecksumCacheCoherent: two nodes write disjoint blocks of the same
// regions at once, so their checksum holds are called back and handed
// over all the time, while a third volume verifies and scrubs (without
// repair) again and again. Every verify and scrub is clean though the
// writers' regions stay marked, and the data is the last written.
func TestChecksumCacheCoherent(t *testing.T) {
	ctx := context.Background()
	seed := seedFor(t)
	r := newRig(t, 2, 2)
	nodes := []*node{r.open(0), r.open(1)}
	tool := r.open(NoSlot)
	defer tool.vol.Close()
	m := newModel()
	const regions = 3
	blocksPerRegion := testRegion / testBS
	var wg sync.WaitGroup
	var done atomic.Int32
	for s, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done.Add(1)
			rng := rand.New(rand.NewPCG(seed, uint64(s)))
			for i := 0; i < 150; i++ {
				// Node s owns the blocks of parity s in every region.
				b := rng.IntN(regions*blocksPerRegion/2)*2 + s
				off := int64(b) * testBS
				p := randBlock(rng, testBS)
				if err := n.vol.WriteAt(ctx, p, off); err != nil {
					t.Error(err)
					return
				}
				m.ack(off, p, 1)
			}
		}()
	}
	checks := 0
	for done.Load() < 2 || checks < 3 {
		checks++
		rep, err := tool.vol.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Problems {
			t.Errorf("verify %d: %s", checks, p)
		}
		srep, err := tool.vol.Scrub(ctx, ScrubOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range srep.Repairs {
			t.Errorf("scrub %d: %+v", checks, p)
		}
		if t.Failed() {
			break
		}
	}
	wg.Wait()
	t.Logf("%d verify and scrub passes", checks)
	m.check(t, nodes[0].vol)
	m.check(t, nodes[1].vol)
	// A node's own verify writes back its own areas first.
	rep, err := nodes[0].vol.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("own verify: %s", p)
	}
	for _, n := range nodes {
		if err := n.vol.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r.verifyClean()
}

// TestChecksumCacheCrashAtEveryIO: a node with cached checksum areas runs a
// script (writes across regions, evictions, a write-back by clean, a
// call-back from another node writing the same region, a verify) and dies
// at its n-th device I/O, for every n until the script completes. Another
// node recovers the dead slot and the slot is reopened; every acknowledged
// write is there, the legs agree and verify finds nothing.
func TestChecksumCacheCrashAtEveryIO(t *testing.T) {
	ctx := context.Background()
	seed := seedFor(t)
	for budget := int64(0); ; budget++ {
		if budget > 2000 {
			t.Fatal("the script never completed")
		}
		completed := crashScript(t, ctx, seed, budget)
		if t.Failed() {
			t.Fatalf("budget %d failed", budget)
		}
		if completed {
			t.Logf("script completes with %d I/Os", budget)
			return
		}
	}
}

// crashScript runs the script once with the victim dying after budget
// I/Os and reports whether the victim got through it alive.
func crashScript(t *testing.T, ctx context.Context, seed uint64, budget int64) bool {
	r := newRig(t, 2, 2)
	if budget%16 != 0 {
		// Hundreds of crash points run in one test: verifying every one
		// of them at the end would add seconds; every 16th is verified.
		r.skipVerify("one crash point in 16 is verified")
	}
	d := &death{}
	d.budget.Store(budget)
	cfg := FastConfig(0)
	for _, l := range r.legs {
		cfg.Legs = append(cfg.Legs, mortalPath{l, d})
	}
	cfg.Store, cfg.Locker = mortalStore{r.store, d}, r.locker
	cfg.ClearDelay = time.Hour // clean runs when the script says
	cfg.Logger = testlog.New(t, "victim")
	// Room for two regions' areas: the third region evicts.
	g, err := NewGeometry(testRegion, testBS, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ChecksumCache = 2 * g.ChecksumPerRegion
	victim, err := Open(ctx, cfg)
	if err != nil {
		if d.dead.Load() {
			return false // died while opening: nothing written
		}
		t.Fatal(err)
	}
	other := r.open(1)
	m := newModel()
	rng := rand.New(rand.NewPCG(seed, uint64(budget)))
	write := func(v *Volume, off int64, nb int) {
		p := randBlock(rng, nb*testBS)
		if err := v.WriteAt(ctx, p, off); err != nil {
			if v == victim && d.dead.Load() {
				m.unknown(off, p, nb)
				return
			}
			t.Fatalf("write at %d: %v", off, err)
		}
		m.ack(off, p, nb)
	}
	steps := []func(){
		func() { write(victim, 0, 1) },
		func() { write(victim, testRegion-testBS, 3) }, // spans regions 0 and 1
		func() { write(victim, 2*testRegion+5*testBS, 2) },
		func() { write(other.vol, 7*testBS, 1) }, // calls region 0 back
		func() { write(victim, 9*testBS, 1) },
		func() {
			if err := victim.clean(ctx, true); err != nil && !d.dead.Load() {
				t.Fatalf("clean: %v", err)
			}
		},
		func() { write(victim, 3*testRegion, 4) },
		func() {
			rep, err := other.vol.Verify(ctx)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			// A dead victim's areas may be stale and its last write on
			// one leg only, but only in regions its slot still marks
			// (recovery copies them and recomputes their areas).
			marked, err := other.vol.readSlotBitmap(ctx, other.vol.view.Load(), 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range rep.Problems {
				if !d.dead.Load() || !marked.Dirty.Test(p.Region) {
					t.Errorf("verify (victim dead: %v): %s", d.dead.Load(), p)
				}
			}
		},
		func() { write(victim, testRegion+2*testBS, 1) },
	}
	for _, step := range steps {
		step()
		if t.Failed() {
			return false
		}
	}
	completed := !d.dead.Load()
	if completed {
		// Close writes the areas back; the victim may die doing it.
		if err := victim.Close(); err != nil && !d.dead.Load() {
			t.Fatalf("close: %v", err)
		}
		completed = !d.dead.Load()
	}
	if !completed {
		// Recovery by the other node, while a victim that died in the
		// script still holds its checksum locks: they are called back,
		// its write-back fails, the recovery recomputes what it marked.
		if _, err := other.vol.Recover(ctx, 0); err != nil {
			t.Fatalf("recover the victim's slot: %v", err)
		}
		victim.Close()
		again := r.open(0)
		if err := again.vol.Close(); err != nil {
			t.Fatal(err)
		}
	}
	m.check(t, other.vol)
	if err := other.vol.Close(); err != nil {
		t.Fatal(err)
	}
	r.verifyClean()
	r.legsIdentical(other.vol.Geometry(), 0, 1)
	return completed
}

// lossyHolder hands out LocalLocker holds whose lease can be lost.
type lossyHolder struct {
	*LocalLocker
	lost chan struct{}
}

type lossyHold struct {
	RegionHold
	lost chan struct{}
}

func (h lossyHold) Lost() <-chan struct{} { return h.lost }

func (h lossyHold) Use() error {
	select {
	case <-h.lost:
		return errLeaseLostForTest
	default:
		return h.RegionHold.Use()
	}
}

var errLeaseLostForTest = errors.New("lease lost")

func (l lossyHolder) HoldRegion(ctx context.Context, req RegionRequest) (RegionHold, error) {
	h, err := l.LocalLocker.HoldRegion(ctx, req)
	if err != nil {
		return nil, err
	}
	return lossyHold{h, l.lost}, nil
}

// TestChecksumCacheLeaseLost: when the holds' lease is lost the cached
// areas are dropped without being written and their holds released; the
// regions are left degraded, so their marks stay until they are copied
// again with recomputed checksums.
func TestChecksumCacheLeaseLost(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 2)
	lh := lossyHolder{r.locker, make(chan struct{})}
	var counters []*areaCounter
	n, err := r.tryOpen(0, func(c *Config) {
		c.Locker = lh
		c.ClearDelay = time.Hour
		for i, d := range c.Legs {
			ac := &areaCounter{Device: d}
			counters = append(counters, ac)
			c.Legs[i] = ac
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ac := range counters {
		ac.g = n.vol.Geometry()
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 3; i++ {
		if err := n.vol.WriteAt(ctx, randBlock(rng, testBS), int64(i)*testRegion); err != nil {
			t.Fatal(err)
		}
	}
	// The volume heals a tainted region in the background (a copy that
	// rewrites its area); the test keeps the regions' data locks so that
	// only write-backs could write an area until the checks are done.
	unlock, err := r.locker.Lock(ctx, n.vol.lockNS, 0, 3*testRegion, true)
	if err != nil {
		t.Fatal(err)
	}
	close(lh.lost)
	testutil.WaitFor(t, 10*time.Second, "the cached areas to be dropped after the lease was lost", func() bool {
		c, _ := n.vol.csums.cached()
		return c == 0
	})
	if held := r.locker.Held(); held != 1 {
		t.Fatalf("%d ranges still held after the lease was lost", held-1)
	}
	for i, ac := range counters {
		if w := ac.writes.Load(); w != 0 {
			t.Fatalf("leg %d: %d checksum area writes after the lease was lost", i, w)
		}
	}
	n.vol.stateMu.Lock()
	degraded := n.vol.in.degraded.Count()
	n.vol.stateMu.Unlock()
	if degraded != 3 {
		t.Fatalf("%d regions degraded, want the 3 whose areas were dropped", degraded)
	}
	unlock()
	// Healing (in the background or at Close) copies them and
	// recomputes their areas.
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
	if got := n.vol.DirtyRegions(); got != 0 {
		t.Fatalf("%d regions still marked after healing", got)
	}
	r.verifyClean()
}

// TestLocalLockerHoldBlocking: a hold's blocking callback fires when a
// conflicting request waits, not for compatible or disjoint ones.
func TestLocalLockerHoldBlocking(t *testing.T) {
	ctx := context.Background()
	l := NewLocalLocker()
	h, err := l.HoldRegion(ctx, RegionRequest{Volume: "v", Off: 0, Length: 100, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	sh, err := l.HoldRegion(ctx, RegionRequest{Volume: "v", Off: 200, Length: 100})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := l.Lock(ctx, "v", 100, 100, true) // disjoint
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	unlock, err = l.Lock(ctx, "v", 250, 10, false) // shared with shared
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	unlock, err = l.Lock(ctx, "w", 0, 100, true) // another volume
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	for name, c := range map[string]<-chan struct{}{"exclusive": h.Blocking(), "shared": sh.Blocking()} {
		select {
		case <-c:
			t.Fatalf("%s hold called back without a conflict", name)
		default:
		}
	}
	got := make(chan error, 1)
	go func() {
		unlock, err := l.Lock(ctx, "v", 50, 200, true) // overlaps both
		if err == nil {
			unlock()
		}
		got <- err
	}()
	for name, hold := range map[string]RegionHold{"exclusive": h, "shared": sh} {
		select {
		case <-hold.Blocking():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s hold not called back", name)
		}
		if err := hold.Use(); err != nil {
			t.Fatal(err)
		}
		if err := hold.Release(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := h.Release(); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("second release: %v", err)
	}
	if err := h.Use(); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("use after release: %v", err)
	}
	if l.Held() != 0 {
		t.Fatalf("%d ranges held", l.Held())
	}
	if lost := h.Lost(); lost != nil {
		t.Fatal("a local hold has a lost channel")
	}
}

// TestCallerOrdersWritesCopiesWait: nodes whose caller orders overlapping
// writes hold their regions shared while writing disjoint blocks of the
// same regions; a scrub with repair and a verify run over and over
// meanwhile. They lock regions exclusively, so they never see a write half
// done: the scrub repairs nothing, the verify finds nothing, and the last
// written data is on every leg.
func TestCallerOrdersWritesCopiesWait(t *testing.T) {
	copiesWaitForWrites(t, true, func(n *node, s int) blockdev.Device { return n.vol })
}

// TestOrderedWriterBesidePlainWrites: as TestCallerOrdersWritesCopiesWait
// on a volume without CallerOrdersWrites, where node 0 writes through its
// OrderedWriter (shared region locks) and node 1 through the volume
// (exclusive range locks): the two kinds conflict where they overlap, and
// copies still never see a write half done.
func TestOrderedWriterBesidePlainWrites(t *testing.T) {
	copiesWaitForWrites(t, false, func(n *node, s int) blockdev.Device {
		if s == 0 {
			return n.vol.OrderedWriter()
		}
		return n.vol
	})
}

// copiesWaitForWrites is the body of the two tests above: writer gives
// the device node s writes through.
func copiesWaitForWrites(t *testing.T, callerOrders bool, writer func(n *node, s int) blockdev.Device) {
	ctx := context.Background()
	seed := seedFor(t)
	r := newRig(t, 2, 2)
	r.callerOrders = callerOrders
	nodes := []*node{r.open(0), r.open(1)}
	tool := r.open(NoSlot)
	defer tool.vol.Close()
	m := newModel()
	const regions = 4
	blocksPerRegion := testRegion / testBS
	var wg sync.WaitGroup
	var done atomic.Int32
	for s, n := range nodes {
		dev := writer(n, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done.Add(1)
			rng := rand.New(rand.NewPCG(seed, uint64(s)))
			for i := 0; i < 200; i++ {
				// Node s writes runs of 1 to 3 blocks in its own
				// quarter of each region, sometimes across a region
				// boundary into the next region's quarter.
				reg := rng.IntN(regions - 1)
				first := reg*blocksPerRegion + (s+2)*blocksPerRegion/4 - 1
				nb := 1 + rng.IntN(2)
				off := int64(first) * testBS
				p := randBlock(rng, nb*testBS)
				if err := dev.WriteAt(ctx, p, off); err != nil {
					t.Error(err)
					return
				}
				m.ack(off, p, nb)
			}
		}()
	}
	passes := 0
	for done.Load() < 2 || passes < 2 {
		passes++
		srep, err := tool.vol.Scrub(ctx, ScrubOptions{Repair: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range srep.Repairs {
			t.Errorf("scrub %d repaired a block a write was changing: %+v", passes, p)
		}
		rep, err := tool.vol.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Problems {
			t.Errorf("verify %d: %s", passes, p)
		}
		if t.Failed() {
			break
		}
	}
	wg.Wait()
	t.Logf("%d scrub and verify passes", passes)
	m.check(t, nodes[0].vol)
	for _, n := range nodes {
		if err := n.vol.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r.legsIdentical(nodes[0].vol.Geometry(), 0, 1)
}

// orphanLocker is a LocalLocker with locks a dead node left behind: until
// released, plain requests overlapping them wait; recovery requests are
// granted over them (as the lock manager's orphans behave).
type orphanLocker struct {
	*LocalLocker
	volume    string
	off, end  int64
	released  chan struct{}
	plainWait atomic.Int32 // plain requests waiting on the orphan
}

func (o *orphanLocker) wait(ctx context.Context, req RegionRequest) error {
	if req.Recovery || req.Volume != o.volume || req.Off >= o.end || req.Off+req.Length <= o.off {
		return nil
	}
	select {
	case <-o.released:
		return nil
	default:
	}
	if req.Try {
		return ErrWouldBlock
	}
	o.plainWait.Add(1)
	defer o.plainWait.Add(-1)
	select {
	case <-o.released:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// releaseAfter checks that the plain write whose result plainDone carries
// is still waiting, releases the orphan and waits for the write to succeed.
func (o *orphanLocker) releaseAfter(t *testing.T, plainDone <-chan error) {
	t.Helper()
	select {
	case err := <-plainDone:
		t.Fatalf("the plain write finished (%v) before the orphan was released", err)
	default:
	}
	close(o.released)
	if err := <-plainDone; err != nil {
		t.Fatal(err)
	}
}

func (o *orphanLocker) LockRegion(ctx context.Context, req RegionRequest) (RegionLock, error) {
	if err := o.wait(ctx, req); err != nil {
		return nil, err
	}
	return o.LocalLocker.LockRegion(ctx, req)
}

func (o *orphanLocker) HoldRegion(ctx context.Context, req RegionRequest) (RegionHold, error) {
	if err := o.wait(ctx, req); err != nil {
		return nil, err
	}
	return o.LocalLocker.HoldRegion(ctx, req)
}

// TestRecoveryWriterPassesOrphanedHolds: a dead node left region 1's
// checksum area held. A plain write of this node to region 1 waits for the
// recovery to release it; the recovery's own write through RecoveryWriter
// goes through at once (it takes the plain load's place), and the plain
// write does not ride on the recovery's hold: it completes only once the
// orphan is released. Both writes' data and checksums are right.
func TestRecoveryWriterPassesOrphanedHolds(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 2)
	var ol *orphanLocker
	n, err := r.tryOpen(0, func(c *Config) {
		c.CallerOrdersWrites = true
		ol = &orphanLocker{LocalLocker: r.locker, off: testRegion, end: 2 * testRegion, released: make(chan struct{})}
		c.Locker = ol
	})
	if err != nil {
		t.Fatal(err)
	}
	ol.volume = n.vol.csumNS()
	rng := rand.New(rand.NewPCG(5, 6))
	plain, rec := randBlock(rng, testBS), randBlock(rng, testBS)
	plainOff, recOff := int64(testRegion+testBS), int64(testRegion+5*testBS)
	plainDone := make(chan error, 1)
	go func() { plainDone <- n.vol.WriteAt(ctx, plain, plainOff) }()
	deadline := time.Now().Add(10 * time.Second)
	for ol.plainWait.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the plain write never waited for the orphaned hold")
		}
		time.Sleep(time.Millisecond)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.vol.RecoveryWriter().WriteAt(rctx, rec, recOff); err != nil {
		t.Fatalf("recovery write behind a plain write waiting for an orphan: %v", err)
	}
	// The plain write is back to waiting for the orphan (a recovery
	// hold is the recovery's alone), never done before its release.
	testutil.WaitFor(t, 10*time.Second, "the plain write waiting for the orphan again", func() bool { return ol.plainWait.Load() > 0 })
	ol.releaseAfter(t, plainDone)
	m := newModel()
	m.ack(plainOff, plain, 1)
	m.ack(recOff, rec, 1)
	m.check(t, n.vol)
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestResyncPassesAPlainWriteWaitingForAnOrphan: a dead node (slot 1) was
// writing region 1 (marked in its bitmap) and left the region's checksum
// area held. A plain write of a live node to another block of region 1
// waits for that hold; it must not keep its data lock while it waits,
// since the coordinator's resync of region 1 needs that lock before the
// dead node's locks can be released. The resync finishes with the plain
// write still waiting, which completes once the orphan is released.
func TestResyncPassesAPlainWriteWaitingForAnOrphan(t *testing.T) {
	for _, callerOrders := range []bool{false, true} {
		t.Run(fmt.Sprintf("CallerOrdersWrites=%v", callerOrders), func(t *testing.T) {
			ctx := context.Background()
			r := newRig(t, 2, 3)
			rng := rand.New(rand.NewPCG(7, 8))
			// The dead node: its own lock table (its locks are the
			// orphan below), its mark on region 1 kept.
			dead, err := r.tryOpen(1, func(c *Config) { c.Locker, c.ClearDelay = NewLocalLocker(), time.Hour })
			if err != nil {
				t.Fatal(err)
			}
			deadData := randBlock(rng, testBS)
			deadOff := int64(testRegion + 9*testBS)
			if err := dead.vol.WriteAt(ctx, deadData, deadOff); err != nil {
				t.Fatal(err)
			}
			ol := &orphanLocker{LocalLocker: r.locker, off: testRegion, end: 2 * testRegion, released: make(chan struct{})}
			tweak := func(c *Config) { c.Locker, c.CallerOrdersWrites = ol, callerOrders }
			live, err := r.tryOpen(0, tweak)
			if err != nil {
				t.Fatal(err)
			}
			coord, err := r.tryOpen(2, tweak)
			if err != nil {
				t.Fatal(err)
			}
			ol.volume = live.vol.csumNS()
			plain := randBlock(rng, testBS)
			plainOff := int64(testRegion + 2*testBS)
			plainDone := make(chan error, 1)
			go func() { plainDone <- live.vol.WriteAt(ctx, plain, plainOff) }()
			testutil.WaitFor(t, 10*time.Second, "the plain write waiting for the orphaned hold", func() bool { return ol.plainWait.Load() > 0 })
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			rep, err := coord.vol.RecoverFenced(rctx, 1)
			if err != nil {
				t.Fatalf("resync of the dead slot beside a plain write waiting for its orphan: %v", err)
			}
			if rep.Regions == 0 {
				t.Fatalf("the dead slot had no region to resync: %+v", rep)
			}
			ol.releaseAfter(t, plainDone)
			m := newModel()
			m.ack(deadOff, deadData, 1)
			m.ack(plainOff, plain, 1)
			m.check(t, live.vol)
			dead.vol.Close()
			for _, n := range []*node{live, coord} {
				if err := n.vol.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestChecksumCacheEvictsBesideLoads: writers to many regions through a
// cache with room for two areas, so that every few writes an eviction
// walks the entries while other writers load theirs. Run under the race
// detector: an eviction looked at a loading entry's load time, which the
// load writes outside the cache's lock.
func TestChecksumCacheEvictsBesideLoads(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	n, err := r.tryOpen(0, func(c *Config) {
		g, err := NewGeometry(testRegion, testBS, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		c.ChecksumCache = 2 * g.ChecksumPerRegion
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.vol.Close()
	regions := int(n.vol.Size() / testRegion)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			p := make([]byte, testBS)
			for range 100 {
				off := int64(rng.IntN(regions))*testRegion + int64(rng.IntN(testRegion/testBS))*testBS
				if err := n.vol.WriteAt(ctx, p, off); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
