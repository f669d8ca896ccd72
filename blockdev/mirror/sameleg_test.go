package mirror

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestUnrecoveredRegionReadFromPrimary: a node crashed leaving a region
// different on the two legs (a torn write it had marked). Until the region
// is resynced every node reads it from the primary leg, and the resync
// makes the other leg agree with what they read.
func TestUnrecoveredRegionReadFromPrimary(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 3)
	crashed, err := r.tryOpen(0, func(c *Config) { c.ClearDelay = time.Hour })
	if err != nil {
		t.Fatal(err)
	}
	x := bytes.Repeat([]byte{0x11}, testBS)
	if err := crashed.vol.WriteAt(ctx, x, 3*testRegion); err != nil {
		t.Fatal(err)
	}
	// The write reached leg 0; leg 1 kept other bytes. The node dies
	// without clearing its mark (its handle is simply abandoned).
	g := crashed.vol.Geometry()
	r.legs[1].Poke(g.DataOffset+3*testRegion, bytes.Repeat([]byte{0x22}, testBS))
	quiet := func(c *Config) { c.RefreshInterval, c.SettleTime = time.Hour, 2*time.Hour }
	b, err := r.tryOpen(1, quiet)
	if err != nil {
		t.Fatal(err)
	}
	c := r.open(2)
	defer b.vol.Close()
	defer c.vol.Close()
	got := make([]byte, testBS)
	for i := 0; i < 10; i++ {
		for _, n := range []*node{b, c} {
			if err := n.vol.ReadAt(ctx, got, 3*testRegion); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, x) {
				t.Fatalf("read %d returned leg 1's copy of an unrecovered region", i)
			}
		}
	}
	// Elsewhere reads are balanced: both legs serve.
	before := [2]int64{b.paths[0].Ops(), b.paths[1].Ops()}
	for i := 0; i < 10; i++ {
		if err := b.vol.ReadAt(ctx, got, 0); err != nil {
			t.Fatal(err)
		}
	}
	if b.paths[0].Ops() == before[0] || b.paths[1].Ops() == before[1] {
		t.Fatal("reads of clean regions were not balanced over the legs")
	}
	rep, err := b.vol.Recover(ctx, 0)
	if err != nil || rep.Regions != 1 || !rep.Cleared {
		t.Fatalf("recover: %+v %v", rep, err)
	}
	if !bytes.Equal(r.legs[1].Peek(g.DataOffset+3*testRegion, testBS), x) {
		t.Fatal("resync did not copy the primary's bytes")
	}
	crashed.vol.Close()
}

// TestRecoverCopiesEveryMarkedRegion: a node crashed with many regions
// marked and different on the two legs; a recovery (which copies several
// regions at once) makes every one of them agree with the primary, counts
// them all and clears the slot.
func TestRecoverCopiesEveryMarkedRegion(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 2)
	crashed, err := r.tryOpen(0, func(c *Config) { c.ClearDelay = time.Hour })
	if err != nil {
		t.Fatal(err)
	}
	g := crashed.vol.Geometry()
	const marked = 2*recoverWorkers + 1
	for i := int64(0); i < marked; i++ {
		x := bytes.Repeat([]byte{byte(0x10 + i)}, testBS)
		if err := crashed.vol.WriteAt(ctx, x, (2*i+1)*testRegion); err != nil {
			t.Fatal(err)
		}
		r.legs[1].Poke(g.DataOffset+(2*i+1)*testRegion, bytes.Repeat([]byte{0xee}, testBS))
	}
	b, err := r.tryOpen(1, func(c *Config) { c.RefreshInterval, c.SettleTime = time.Hour, 2*time.Hour })
	if err != nil {
		t.Fatal(err)
	}
	defer b.vol.Close()
	rep, err := b.vol.Recover(ctx, 0)
	if err != nil || rep.Regions != marked || !rep.Cleared {
		t.Fatalf("recover: %+v %v, want %d regions copied and the slot cleared", rep, err, marked)
	}
	for i := int64(0); i < marked; i++ {
		off := g.DataOffset + (2*i+1)*testRegion
		if !bytes.Equal(r.legs[1].Peek(off, testBS), r.legs[0].Peek(off, testBS)) {
			t.Fatalf("region %d differs on the legs after the recovery", 2*i+1)
		}
	}
	crashed.vol.Close()
}
