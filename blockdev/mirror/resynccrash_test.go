package mirror

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestResyncCrashRandomized: a returning leg's resync is cut off by the
// death of the node running it, at a random point, while another node
// keeps writing; a second resync finishes the job. The legs then agree and
// every acknowledged write is there.
func TestResyncCrashRandomized(t *testing.T) {
	for round := 0; round < 4; round++ {
		seed := seedFor(t) + uint64(round)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(seed, 5))
			r := newRig(t, 2, 2)
			w := r.open(0)
			m := newModel()
			write := func(wr *rand.Rand) error {
				nb := 1 + wr.IntN(16)
				off := wr.Int64N(w.vol.Size()/testBS-16) * testBS
				p := randBlock(wr, nb*testBS)
				unlock, _ := r.locker.Lock(ctx, "app", off, int64(len(p)), true)
				defer unlock()
				if err := w.vol.WriteAt(ctx, p, off); err != nil {
					m.unknown(off, p, nb)
					return err
				}
				m.ack(off, p, nb)
				return nil
			}
			wr := rand.New(rand.NewPCG(seed, 6))
			for i := 0; i < 30; i++ {
				if err := write(wr); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.vol.FailLeg(ctx, 1); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 150; i++ { // leg 1 misses these
				if err := write(wr); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.vol.ReturnLeg(ctx, 1, nil); err != nil {
				t.Fatal(err)
			}
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // the writer keeps going during both resyncs
				defer wg.Done()
				wr := rand.New(rand.NewPCG(seed, 7))
				for i := 0; i < 5000 && !stop.Load(); i++ {
					if err := write(wr); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			tool, err := r.openMortal(t, NoSlot, 1<<40)
			if err != nil {
				t.Fatal(err)
			}
			tool.d.budget.Store(int64(rng.IntN(300)))
			_, err = tool.vol.Resync(ctx)
			died := tool.d.dead.Load()
			tool.d.dead.Store(true)
			tool.vol.Close()
			if err != nil && !died {
				t.Fatalf("resync failed without its node dying: %v", err)
			}
			t.Logf("first resync: died=%v err=%v", died, err)
			if err := w.vol.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			finisher := r.open(NoSlot)
			rep, err := finisher.vol.Resync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("second resync: %+v", rep.Legs)
			if st := finisher.vol.Table().Legs[1].State; st != LegInSync {
				t.Fatalf("leg 1 is %s", st)
			}
			finisher.vol.Close()
			w.vol.Refresh(ctx)
			stop.Store(true)
			wg.Wait()
			m.check(t, w.vol)
			if err := w.vol.Close(); err != nil {
				t.Fatal(err)
			}
			r.verifyClean()
			r.legsIdentical(w.vol.Geometry(), 0, 1)
		})
	}
}
