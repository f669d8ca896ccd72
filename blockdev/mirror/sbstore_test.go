package mirror

import (
	"context"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// TestSuperblockTable: with no store, two nodes learn leg changes from the
// superblocks.
func TestSuperblockTable(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 2)
	open := func(slot int) *Volume {
		cfg := FastConfig(slot)
		for _, m := range r.legs {
			cfg.Legs = append(cfg.Legs, blockdev.NewFaulty(m))
		}
		cfg.Locker, cfg.Logger = r.locker, testlog.New(t, "sb")
		v, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b := open(0), open(1)
	defer a.Close()
	defer b.Close()
	if err := a.FailLeg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.Table().Legs[1].State; st != LegFailed {
		t.Fatalf("node b sees leg 1 as %s", st)
	}
	// b's view is current, so its compare-and-swap succeeds; a stale
	// generation is refused.
	if err := b.ReturnLeg(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.store.CompareAndSwap(ctx, b.UUID(), 1, b.Table()); err == nil {
		t.Fatal("compare-and-swap from a stale generation succeeded")
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.Table().Legs[1].State; st != LegResyncing {
		t.Fatalf("node a sees leg 1 as %s", st)
	}
}
