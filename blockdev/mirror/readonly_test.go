package mirror

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// watchedLeg is a leg that counts every write and flush reaching it.
type watchedLeg struct {
	blockdev.Device
	name   string
	writes *atomic.Int64
}

func (w watchedLeg) WriteAt(ctx context.Context, p []byte, off int64) error {
	w.writes.Add(1)
	return w.Device.WriteAt(ctx, p, off)
}

func (w watchedLeg) Flush(ctx context.Context) error {
	w.writes.Add(1)
	return w.Device.Flush(ctx)
}

// Close closes the path, not the disk: the next open finds it again.
func (w watchedLeg) Close() error { return nil }

// removedLegRig is the operator's sequence on three legs a, b, c: format a
// and b, add c and resync it, remove c. a and b hold generation 4, c
// generation 3 (listing a, b and c, all in sync).
type removedLegRig struct {
	t      *testing.T
	legs   map[string]*blockdev.Mem
	writes atomic.Int64
}

func newRemovedLegRig(t *testing.T) *removedLegRig {
	t.Helper()
	ctx := context.Background()
	r := &removedLegRig{t: t, legs: map[string]*blockdev.Mem{}}
	for _, n := range []string{"a", "b", "c"} {
		m, err := blockdev.NewMem(testLeg, testBS)
		if err != nil {
			t.Fatal(err)
		}
		r.legs[n] = m
	}
	if _, err := Format(ctx, []blockdev.Device{r.legs["a"], r.legs["b"]}, FormatOptions{RegionSize: testRegion, Slots: 2, ClusterID: "t", Addrs: []string{"a", "b"}, DataIsZero: true}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(ctx, r.config(false, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	i, err := v.AddLeg(ctx, watchedLeg{Device: r.legs["c"], name: "c", writes: &r.writes}, "c", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.RemoveLeg(ctx, i); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]uint64{"a": 4, "b": 4, "c": 3} {
		if g := r.generation(n); g != want {
			t.Fatalf("leg %s at generation %d after the set-up, want %d", n, g, want)
		}
	}
	r.writes.Store(0)
	return r
}

// config opens the named legs (in that order); the others are found by
// their recorded addresses. Every path counts its writes.
func (r *removedLegRig) config(readOnly bool, names ...string) Config {
	cfg := FastConfig(NoSlot)
	cfg.ReadOnly = readOnly
	cfg.Logger = testlog.New(r.t, "mirror")
	for _, n := range names {
		cfg.Legs = append(cfg.Legs, watchedLeg{Device: blockdev.NewFaulty(r.legs[n]), name: n, writes: &r.writes})
	}
	cfg.OpenLeg = func(ctx context.Context, addr string) (blockdev.Device, error) {
		m := r.legs[addr]
		if m == nil {
			return nil, fmt.Errorf("no leg at %q", addr)
		}
		return watchedLeg{Device: blockdev.NewFaulty(m), name: addr, writes: &r.writes}, nil
	}
	return cfg
}

func (r *removedLegRig) generation(name string) uint64 {
	sb, err := DecodeSuperblock(r.legs[name].Peek(0, SuperblockSize))
	if err != nil {
		r.t.Fatal(err)
	}
	return sb.Table.Generation
}

// image is every byte of every leg.
func (r *removedLegRig) image() map[string]string {
	out := map[string]string{}
	for n, m := range r.legs {
		out[n] = string(m.Peek(0, m.Size()))
	}
	return out
}

// TestTableNeverGoesBack: whatever leg Open starts from and in whatever
// order the legs come, the newest leg table wins; the removed leg c, which
// holds the older table, is refused as stale and its table is never
// written over a and b, read-only or not.
func TestTableNeverGoesBack(t *testing.T) {
	ctx := context.Background()
	r := newRemovedLegRig(t)
	for _, readOnly := range []bool{true, false} {
		for _, order := range [][]string{{"c"}, {"c", "a"}, {"c", "b", "a"}, {"a", "c"}, {"b", "a", "c"}} {
			before := r.image()
			_, err := Open(ctx, r.config(readOnly, order...))
			if !errors.Is(err, ErrStaleLeg) || !strings.Contains(err.Error(), "removed") {
				t.Fatalf("read-only %v, legs %v: want the removed leg refused as stale, got %v", readOnly, order, err)
			}
			for n, img := range r.image() {
				if img != before[n] {
					t.Fatalf("read-only %v, legs %v: leg %s changed", readOnly, order, n)
				}
			}
		}
		for _, order := range [][]string{{"a"}, {"b"}, {"b", "a"}} {
			v, err := Open(ctx, r.config(readOnly, order...))
			if err != nil {
				t.Fatalf("read-only %v, legs %v: %v", readOnly, order, err)
			}
			tab := v.Table()
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			if tab.Generation != 4 || len(tab.Legs) != 2 {
				t.Fatalf("read-only %v, legs %v: table %+v, want generation 4 with 2 legs", readOnly, order, tab)
			}
		}
	}
	for n, want := range map[string]uint64{"a": 4, "b": 4, "c": 3} {
		if g := r.generation(n); g != want {
			t.Fatalf("leg %s went to generation %d, want %d", n, g, want)
		}
	}
}

// TestStaleTableIsReported: a live leg whose superblock lags (a torn leg
// table update) is listed in Notes by a read-only open, which does not
// rewrite it; a writable open brings it up to the table.
func TestStaleTableIsReported(t *testing.T) {
	ctx := context.Background()
	r := newRemovedLegRig(t)
	// Put generation 3 back on b alone, as if the last update never
	// reached it; c is then listed again in b's table, not in a's.
	old := r.legs["c"].Peek(0, SuperblockSize)
	sb, err := DecodeSuperblock(old)
	if err != nil {
		t.Fatal(err)
	}
	sb.Self = sb.Table.Legs[1].UUID
	b, err := EncodeSuperblock(sb)
	if err != nil {
		t.Fatal(err)
	}
	r.legs["b"].Poke(0, b)
	for _, order := range [][]string{{"b"}, {"b", "a"}} {
		r.writes.Store(0)
		v, err := Open(ctx, r.config(true, order...))
		if err != nil {
			t.Fatal(err)
		}
		notes := strings.Join(v.Notes(), "\n")
		tab := v.Table()
		st, err := v.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v.Close()
		if tab.Generation != 4 || !strings.Contains(notes, "stale leg table generation 3") || len(st.Notes) == 0 {
			t.Fatalf("legs %v: table generation %d, notes %q", order, tab.Generation, notes)
		}
		if n := r.writes.Load(); n != 0 {
			t.Fatalf("legs %v: read-only open wrote %d times", order, n)
		}
		if g := r.generation("b"); g != 3 {
			t.Fatalf("read-only open rewrote b's superblock (generation %d)", g)
		}
	}
	v, err := Open(ctx, r.config(false, "b"))
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	if g := r.generation("b"); g != 4 {
		t.Fatalf("writable open left b at generation %d", g)
	}
}

// TestReadOnlyOpenNeverWrites: a read-only volume writes nothing to a leg
// in Open, Status, Verify, Scrub without repair, or Close, leaves missing
// legs unfailed at the same generation, and refuses every change.
func TestReadOnlyOpenNeverWrites(t *testing.T) {
	ctx := context.Background()
	r := newRemovedLegRig(t)
	delete(r.legs, "c")
	before := r.image()
	hidden := r.legs["b"]
	delete(r.legs, "b") // b is gone: not given and not at its address
	cfg := r.config(true, "a")
	if _, err := Open(ctx, cfg); !errors.Is(err, ErrMissingLeg) {
		t.Fatalf("missing leg without AllowMissingLegs: %v", err)
	}
	cfg.AllowMissingLegs = true
	v, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := v.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation != 4 || st.Legs[1].State != LegInSync || st.Legs[1].Online {
		t.Fatalf("status with b missing: %+v", st)
	}
	if !strings.Contains(strings.Join(st.Notes, "\n"), "not checked and not changed") {
		t.Fatalf("status notes do not mention the missing leg: %q", st.Notes)
	}
	if _, err := v.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Scrub(ctx, ScrubOptions{}); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"fail leg":     v.FailLeg(ctx, 1),
		"remove leg":   v.RemoveLeg(ctx, 1),
		"scrub repair": func() error { _, err := v.Scrub(ctx, ScrubOptions{Repair: true}); return err }(),
		"resync":       func() error { _, err := v.Resync(ctx); return err }(),
		"recover":      func() error { _, err := v.Recover(ctx, 0); return err }(),
		"write":        v.WriteAt(ctx, make([]byte, testBS), 0),
	} {
		if err == nil {
			t.Errorf("%s on a read-only volume succeeded", what)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if n := r.writes.Load(); n != 0 {
		t.Fatalf("read-only volume wrote to its legs %d times", n)
	}
	r.legs["b"] = hidden
	for n, img := range r.image() {
		if img != before[n] {
			t.Fatalf("leg %s changed", n)
		}
	}
	if _, err := Open(ctx, Config{Legs: cfg.Legs, Slot: 0, ReadOnly: true, RefreshInterval: 1, SettleTime: 2}); err == nil {
		t.Fatal("read-only open with a node slot accepted")
	}
}

// TestNoOpChangeKeepsGeneration: failing a leg that is already failed
// changes nothing, so the generation stays.
func TestNoOpChangeKeepsGeneration(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	n := r.open(NoSlot)
	defer n.vol.Close()
	if err := n.vol.FailLeg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	g := n.vol.Table().Generation
	if err := n.vol.FailLeg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := n.vol.Table().Generation; got != g {
		t.Fatalf("failing a failed leg moved the generation from %d to %d", g, got)
	}
}
