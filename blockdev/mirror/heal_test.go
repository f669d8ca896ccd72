package mirror

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
)

// TestStaleViewHealed: node b has not yet seen leg 0 failed and patches a
// region's checksums from leg 0, which missed node a's latest write there.
// Once the volume is whole again (leg 0 removed), the regions written while
// degraded are copied again before their marks clear, so data and
// checksums agree on every leg.
func TestStaleViewHealed(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 3, 2)
	a := r.open(0)
	b, err := r.tryOpen(1, func(c *Config) { c.RefreshInterval, c.SettleTime = time.Hour, 2*time.Hour })
	if err != nil {
		t.Fatal(err)
	}
	region := int64(5) * testRegion
	x := bytes.Repeat([]byte{1}, testBS)
	y := bytes.Repeat([]byte{2}, testBS)
	z := bytes.Repeat([]byte{3}, testBS)
	if err := a.vol.WriteAt(ctx, x, region); err != nil {
		t.Fatal(err)
	}
	if err := a.vol.FailLeg(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.vol.WriteAt(ctx, y, region+testBS); err != nil {
		t.Fatal(err)
	}
	// b still thinks leg 0 is the primary.
	if err := b.vol.WriteAt(ctx, z, region+2*testBS); err != nil {
		t.Fatal(err)
	}
	if err := b.vol.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.vol.RemoveLeg(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.vol.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.vol.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.vol.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := FastConfig(NoSlot)
	cfg.Legs, cfg.Store = []blockdev.Device{r.legs[1], r.legs[2]}, r.store
	v, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rep, err := v.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("verify: %s", p)
	}
	if len(rep.Dirty) != 0 {
		t.Errorf("marks left: %v", rep.Dirty)
	}
	got := make([]byte, 3*testBS)
	if err := v.ReadAt(ctx, got, region); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(append(append([]byte{}, x...), y...), z...)) {
		t.Fatal("acknowledged writes lost")
	}
}
