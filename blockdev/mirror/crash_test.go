package mirror

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// death is a node's fate: after budget more I/O operations, or once killed,
// nothing the node does reaches a disk or the store any more.
type death struct {
	budget atomic.Int64
	dead   atomic.Bool
}

func (d *death) step() error {
	if d.dead.Load() {
		return fmt.Errorf("%w: node is dead", blockdev.ErrIO)
	}
	if d.budget.Add(-1) < 0 {
		d.dead.Store(true)
		return fmt.Errorf("%w: node is dead", blockdev.ErrIO)
	}
	return nil
}

type mortalPath struct {
	blockdev.Device
	d *death
}

func (p mortalPath) ReadAt(ctx context.Context, b []byte, off int64) error {
	if err := p.d.step(); err != nil {
		return err
	}
	return p.Device.ReadAt(ctx, b, off)
}

func (p mortalPath) WriteAt(ctx context.Context, b []byte, off int64) error {
	if err := p.d.step(); err != nil {
		return err
	}
	return p.Device.WriteAt(ctx, b, off)
}

func (p mortalPath) Flush(ctx context.Context) error {
	if err := p.d.step(); err != nil {
		return err
	}
	return p.Device.Flush(ctx)
}

func (p mortalPath) Close() error { return nil }

type mortalStore struct {
	LegStateStore
	d *death
}

var errDead = errors.New("node is dead")

func (s mortalStore) Load(ctx context.Context, v uuid.UUID) (LegTable, bool, error) {
	if s.d.dead.Load() {
		return LegTable{}, false, errDead
	}
	return s.LegStateStore.Load(ctx, v)
}

func (s mortalStore) CompareAndSwap(ctx context.Context, v uuid.UUID, prev uint64, next LegTable) error {
	if s.d.dead.Load() {
		return errDead
	}
	return s.LegStateStore.CompareAndSwap(ctx, v, prev, next)
}

type mortalNode struct {
	slot int
	vol  *Volume
	d    *death
}

func (r *rig) openMortal(t testing.TB, slot int, budget int64) (*mortalNode, error) {
	d := &death{}
	d.budget.Store(budget)
	cfg := FastConfig(slot)
	for _, m := range r.legs {
		cfg.Legs = append(cfg.Legs, mortalPath{m, d})
	}
	cfg.Store, cfg.Locker = mortalStore{r.store, d}, r.locker
	cfg.CallerOrdersWrites = r.callerOrders
	cfg.Logger = testlog.New(t, fmt.Sprintf("node%d", slot))
	v, err := Open(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	return &mortalNode{slot: slot, vol: v, d: d}, nil
}

// TestCrashRandomized: several node slots write random data to overlapping
// ranges under application locks; nodes die at random points (mid bitmap
// update, mid data write, mid recovery of another node); a survivor
// recovers the dead slot while writes go on, and the slot is reopened.
// Afterwards every leg holds the same data and every acknowledged write is
// there.
// soak runs the randomized crash test for longer: go test -run
// CrashRandomized ./blockdev/mirror -mirror.soak=10m
var soak = flag.Duration("mirror.soak", 0, "run TestCrashRandomized for this long instead of a few rounds")

func TestCrashRandomized(t *testing.T) {
	rounds := 16
	if testing.Short() {
		rounds = 2
	}
	deadline := time.Now().Add(20 * time.Second)
	if *soak > 0 {
		rounds, deadline = 1<<30, time.Now().Add(*soak)
	}
	for round := 0; round < rounds && time.Now().Before(deadline); round++ {
		seed := seedFor(t) + uint64(round)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { crashRound(t, seed) })
	}
}

func crashRound(t *testing.T, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 1))
	nlegs, slots := 2+rng.IntN(2), 3
	r := newRig(t, nlegs, slots)
	r.callerOrders = rng.IntN(2) == 0
	t.Logf("%d legs, caller orders writes: %v", nlegs, r.callerOrders)
	m := newModel()
	appNS := "app"
	const blocks = 256 // a hot area spanning 8 regions, so writers overlap
	var (
		mu    sync.Mutex
		nodes = map[int]*mortalNode{}
	)
	const never = 1 << 40
	for s := 0; s < slots; s++ {
		n, err := r.openMortal(t, s, never)
		if err != nil {
			t.Fatal(err)
		}
		nodes[s] = n
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	writer := func(s int, wseed uint64) {
		defer wg.Done()
		wr := rand.New(rand.NewPCG(wseed, 2))
		for i := 0; i < 400; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			n := nodes[s]
			mu.Unlock()
			if n == nil || n.d.dead.Load() {
				return
			}
			nb := 1 + wr.IntN(8)
			off := int64(wr.IntN(blocks-nb)) * testBS
			p := randBlock(wr, nb*testBS)
			unlock, err := r.locker.Lock(ctx, appNS, off, int64(len(p)), true)
			if err != nil {
				t.Error(err)
				return
			}
			err = n.vol.WriteAt(ctx, p, off)
			if err == nil {
				m.ack(off, p, nb)
			} else {
				m.unknown(off, p, nb)
			}
			unlock()
			if err != nil {
				return
			}
		}
	}
	for s := 0; s < slots; s++ {
		wg.Add(1)
		go writer(s, seed+uint64(s)*7)
	}
	// Kill and recover a few times while the writers run.
	for kill := 0; kill < 3; kill++ {
		time.Sleep(time.Duration(1+rng.IntN(5)) * time.Millisecond)
		mu.Lock()
		victim := nodes[rng.IntN(slots)]
		mu.Unlock()
		victim.d.budget.Store(int64(rng.IntN(12)))
		// Wait (bounded) until the victim has used its budget.
		for i := 0; i < 200 && !victim.d.dead.Load(); i++ {
			time.Sleep(time.Millisecond)
		}
		victim.d.dead.Store(true)
		// A survivor recovers the dead slot; it may die while doing it
		// (its budget is random too), and then a fresh tool finishes.
		mu.Lock()
		var coord *mortalNode
		for _, n := range nodes {
			if n != victim && !n.d.dead.Load() {
				coord = n
				break
			}
		}
		mu.Unlock()
		deadSlots := []int{victim.slot}
		if coord != nil {
			if rng.IntN(3) == 0 {
				coord.d.budget.Store(int64(rng.IntN(40)))
			}
			if _, err := coord.vol.Recover(ctx, victim.slot); err != nil {
				if !coord.d.dead.Load() {
					t.Fatalf("recover slot %d: %v", victim.slot, err)
				}
				coord.d.dead.Store(true)
				deadSlots = append(deadSlots, coord.slot)
				t.Logf("coordinator slot %d died mid-recovery", coord.slot)
			}
		}
		// Reopen the dead slots; Open recovers the slot's own regions.
		for _, s := range deadSlots {
			mu.Lock()
			old := nodes[s]
			mu.Unlock()
			old.vol.Close()
			n, err := r.openMortal(t, s, never)
			if err != nil {
				t.Fatalf("reopen slot %d: %v", s, err)
			}
			mu.Lock()
			nodes[s] = n
			mu.Unlock()
			wg.Add(1)
			go writer(s, seed+uint64(kill*100+s))
		}
	}
	time.Sleep(5 * time.Millisecond)
	close(stop)
	wg.Wait()
	for _, n := range nodes {
		err := n.vol.Close()
		if n.d.dead.Load() {
			// Died late (a coordinator's budget outlived its
			// recovery); its slot is recovered by reopening.
			n2, err := r.openMortal(t, n.slot, never)
			if err != nil {
				t.Fatalf("reopen slot %d: %v", n.slot, err)
			}
			if err := n2.vol.Close(); err != nil {
				t.Fatalf("close reopened slot %d: %v", n.slot, err)
			}
		}
		if err != nil && !n.d.dead.Load() {
			t.Fatalf("close slot %d: %v", n.slot, err)
		}
	}
	tool := r.open(NoSlot)
	for _, l := range tool.vol.Table().Legs {
		if l.State != LegInSync {
			t.Fatalf("a node crash failed a leg: %+v", tool.vol.Table())
		}
	}
	m.check(t, tool.vol)
	tool.vol.Close()
	r.verifyClean()
	idx := []int{}
	for i := range r.legs {
		idx = append(idx, i)
	}
	r.legsIdentical(tool.vol.Geometry(), idx...)
}

// TestPowerLossRandomized: nodes write and flush; the power fails with
// writes in flight, tearing unflushed multi-block writes (data, checksums
// and bitmap blocks alike); every node reopens its slot. Flushed writes
// survive and the legs agree.
func TestPowerLossRandomized(t *testing.T) {
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		seed := seedFor(t) + uint64(round)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(seed, 3))
			r := newRig(t, 2+rng.IntN(2), 2)
			r.callerOrders = rng.IntN(2) == 0
			m := newModel()
			nodes := []*node{r.open(0), r.open(1)}
			var wg sync.WaitGroup
			var frozen sync.RWMutex // held exclusively while the power fails
			stop := atomic.Bool{}
			for s, n := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					wr := rand.New(rand.NewPCG(seed, uint64(s)))
					for i := 0; i < 300 && !stop.Load(); i++ {
						nb := 1 + wr.IntN(40)
						off := int64(wr.IntN(2000)) * testBS
						p := randBlock(wr, nb*testBS)
						unlock, _ := r.locker.Lock(ctx, "app", off, int64(len(p)), true)
						frozen.RLock()
						if stop.Load() { // the power is already out
							frozen.RUnlock()
							unlock()
							return
						}
						err := n.vol.WriteAt(ctx, p, off)
						if err == nil && wr.IntN(2) == 0 {
							err = n.vol.Flush(ctx)
							if err == nil {
								m.ack(off, p, nb)
							}
						} else {
							m.unknown(off, p, nb)
						}
						frozen.RUnlock()
						unlock()
						if err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			time.Sleep(time.Duration(2+rng.IntN(10)) * time.Millisecond)
			frozen.Lock()
			crashed := make([]*blockdev.Mem, len(r.legs))
			for i, l := range r.legs {
				crashed[i] = l.CrashClone(blockdev.CrashOptions{KeepProbability: rng.Float64(), Seed: seed + uint64(i)})
			}
			stop.Store(true)
			frozen.Unlock()
			wg.Wait()
			for _, n := range nodes {
				n.vol.Close()
			}
			r2 := &rig{t: t, legs: crashed, store: NewMemStateStore(), locker: NewLocalLocker()}
			for s := 0; s < 2; s++ { // each node comes back and recovers itself
				n := r2.open(s)
				if s == 1 {
					m.check(t, n.vol)
				}
				n.vol.Close()
			}
			r2.verifyClean()
			idx := []int{}
			for i := range crashed {
				idx = append(idx, i)
			}
			r2.legsIdentical(nodes[0].vol.Geometry(), idx...)
		})
	}
}
