package mirror

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestLegFailsMidWrite: a leg's path dies part way through a write that
// spans several regions (after some of its pieces landed). The write is
// acknowledged from the other leg, the leg is failed cluster-wide, and the
// volume keeps serving the new data. With cached checksum areas the leg
// may instead die when the areas are written back; it is failed then, and
// the regions stay marked.
func TestLegFailsMidWrite(t *testing.T) {
	ctx := context.Background()
	seed := seedFor(t)
	for _, cache := range []int64{0, FastConfig(0).ChecksumCache} {
		for budget := int64(0); budget < 6; budget++ {
			r := newRig(t, 2, 1)
			n, err := r.tryOpen(0, func(c *Config) { c.ChecksumCache = cache })
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(seed, uint64(budget)))
			p := randBlock(rng, 3*testRegion)
			off := int64(testRegion / 2)
			n.paths[1].FailAfter(budget)
			if err := n.vol.WriteAt(ctx, p, off); err != nil {
				t.Fatalf("cache %d budget %d: write failed although leg 0 is healthy: %v", cache, budget, err)
			}
			if cache > 0 && n.vol.Table().Legs[1].State != LegFailed {
				// The checksums are still cached: the leg dies when
				// they are written back.
				if err := n.vol.clean(ctx, true); err != nil {
					t.Fatalf("cache %d budget %d: write-back failed although leg 0 is healthy: %v", cache, budget, err)
				}
			}
			if st := n.vol.Table().Legs[1].State; st != LegFailed {
				t.Fatalf("cache %d budget %d: leg 1 is %s", cache, budget, st)
			}
			got := make([]byte, len(p))
			if err := n.vol.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, p) {
				t.Fatalf("cache %d budget %d: read back (%v)", cache, budget, err)
			}
			if n.vol.DirtyRegions() == 0 {
				t.Fatalf("cache %d budget %d: marks cleared while a leg is failed", cache, budget)
			}
			n.vol.Close()
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := FastConfig(0)
	good.Legs = newRig(t, 1, 1).asDevices()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"no legs":     {func(c *Config) { c.Legs = nil }, "Legs"},
		"bad slot":    {func(c *Config) { c.Slot = -2 }, "Slot"},
		"refresh":     {func(c *Config) { c.RefreshInterval = 0 }, "RefreshInterval"},
		"settle":      {func(c *Config) { c.SettleTime = c.RefreshInterval }, "SettleTime"},
		"rate":        {func(c *Config) { c.ResyncRate = -1 }, "ResyncRate"},
		"clear delay": {func(c *Config) { c.ClearDelay = -time.Second }, "ClearDelay"},
		"nil leg":     {func(c *Config) { c.Legs = append(c.Legs, nil) }, "nil"},
	} {
		c := good
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	c := DefaultConfig(0)
	c.Legs = good.Legs
	if err := c.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cfg := good
	cfg.Slot = 5
	if _, err := Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "slot 5 out of range") {
		t.Fatalf("slot beyond the volume's: %v", err)
	}
}
