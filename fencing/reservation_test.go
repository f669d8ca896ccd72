package fencing_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/fencetest"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// rig is a volume of several legs reached by several nodes.
type rig struct {
	targets []*fencetest.Target
}

func newRig(opts ...fencetest.Options) *rig {
	r := &rig{}
	for _, o := range opts {
		r.targets = append(r.targets, fencetest.NewTarget(o))
	}
	return r
}

// node is one node's view of the rig: its own nexus to every leg.
type node struct {
	ref    fencing.NodeRef
	inits  []*fencetest.Initiator
	fencer *fencing.ReservationFencer
}

func (r *rig) node(t *testing.T, name, inc string) *node {
	t.Helper()
	n := &node{ref: fencing.NewNodeRef(name, inc, 0)}
	var legs []fencing.Leg
	for i, tg := range r.targets {
		in := tg.Initiator(name)
		n.inits = append(n.inits, in)
		legs = append(legs, fencing.Leg{Name: "leg" + string(rune('0'+i)), Dev: in})
	}
	f, err := fencing.NewReservationFencer(fencing.ReservationConfig{
		Self:   n.ref,
		Legs:   func() []fencing.Leg { return legs },
		Logger: testlog.New(t, name),
	})
	if err != nil {
		t.Fatal(err)
	}
	n.fencer = f
	return n
}

func (n *node) write(leg int, b byte) error {
	p := make([]byte, 512)
	for i := range p {
		p[i] = b
	}
	return n.inits[leg].WriteAt(context.Background(), p, 0)
}

func TestReservationJoinFenceWrites(t *testing.T) {
	ctx := context.Background()
	r := newRig(fencetest.Options{NoPreemptAndAbort: true}, fencetest.Options{})
	a := r.node(t, "node1", "inc1")
	b := r.node(t, "node2", "inc1")
	for _, n := range []*node{a, b} {
		if err := n.fencer.Join(ctx); err != nil {
			t.Fatalf("join %s: %v", n.ref, err)
		}
	}
	for i, tg := range r.targets {
		res := tg.Reservation()
		if !res.Held || res.Type != blockdev.WriteExclusiveRegistrantsOnly {
			t.Fatalf("leg %d reservation = %+v, want type 5", i, res)
		}
		if got := tg.Keys(); len(got) != 2 {
			t.Fatalf("leg %d keys = %x, want both nodes", i, got)
		}
	}
	if err := a.write(0, 'a'); err != nil {
		t.Fatalf("registered node write: %v", err)
	}
	// An initiator that never registered cannot write.
	stranger := r.targets[0].Initiator("stranger")
	if err := stranger.WriteAt(ctx, make([]byte, 512), 0); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("unregistered write: %v, want conflict", err)
	}

	// node2 fences node1, which held the reservation on every leg.
	if err := b.fencer.Fence(ctx, a.ref); err != nil {
		t.Fatalf("fence: %v", err)
	}
	for i, tg := range r.targets {
		if slices.Contains(tg.Keys(), a.ref.Key) {
			t.Fatalf("leg %d still has the victim's key", i)
		}
		res := tg.Reservation()
		if !res.Held || res.Key != b.ref.Key || res.Type != fencing.ReservationType {
			t.Fatalf("leg %d reservation after fence = %+v, want held by node2", i, res)
		}
		if err := a.write(i, 'x'); !errors.Is(err, blockdev.ErrReservationConflict) {
			t.Fatalf("fenced node wrote to leg %d: %v", i, err)
		}
		if err := b.write(i, 'b'); err != nil {
			t.Fatalf("survivor write leg %d: %v", i, err)
		}
	}
	if got := r.targets[0].Bytes()[0]; got != 'b' {
		t.Fatalf("leg 0 holds %q, want the survivor's data", got)
	}

	// Fencing again is idempotent; the fenced node learns it was fenced.
	if err := b.fencer.Fence(ctx, a.ref); err != nil {
		t.Fatalf("second fence: %v", err)
	}
	if err := a.fencer.CheckSelf(ctx); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("CheckSelf of fenced node = %v, want ErrFenced", err)
	}
	if err := a.fencer.Fence(ctx, b.ref); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("fenced node fencing others = %v, want ErrFenced", err)
	}

	// It rejoins as a new incarnation with a new key and may write again.
	a2 := &node{ref: fencing.NewNodeRef("node1", "inc2", 0), inits: a.inits}
	if a2.ref.Key == a.ref.Key {
		t.Fatal("new incarnation got the old key")
	}
	legs := []fencing.Leg{{Name: "leg0", Dev: a.inits[0]}, {Name: "leg1", Dev: a.inits[1]}}
	f2, err := fencing.NewReservationFencer(fencing.ReservationConfig{Self: a2.ref, Legs: func() []fencing.Leg { return legs }})
	if err != nil {
		t.Fatal(err)
	}
	if err := f2.Join(ctx); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if err := a2.write(0, 'c'); err != nil {
		t.Fatalf("rejoined write: %v", err)
	}
}

func TestReservationFenceLegFailureFails(t *testing.T) {
	ctx := context.Background()
	r := newRig(fencetest.Options{}, fencetest.Options{})
	a := r.node(t, "node1", "i")
	b := r.node(t, "node2", "i")
	for _, n := range []*node{a, b} {
		if err := n.fencer.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r.targets[1].FailAll(blockdev.ErrIO)
	err := b.fencer.Fence(ctx, a.ref)
	if !errors.Is(err, fencing.ErrFenceFailed) || !errors.Is(err, blockdev.ErrIO) {
		t.Fatalf("fence with an unreachable leg = %v, want ErrFenceFailed wrapping ErrIO", err)
	}
	r.targets[1].FailAll(nil)
	if err := b.fencer.Fence(ctx, a.ref); err != nil {
		t.Fatalf("fence after heal: %v", err)
	}
}

func TestReservationSkipsLegsWithoutReservations(t *testing.T) {
	ctx := context.Background()
	r := newRig(fencetest.Options{NoReservations: true}, fencetest.Options{})
	a := r.node(t, "node1", "i")
	b := r.node(t, "node2", "i")
	for _, n := range []*node{a, b} {
		if err := n.fencer.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.fencer.Fence(ctx, a.ref); err != nil {
		t.Fatal(err)
	}
	if err := a.write(1, 'x'); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("write to PR leg after fence: %v", err)
	}

	only := newRig(fencetest.Options{NoReservations: true})
	c := only.node(t, "node3", "i")
	d := only.node(t, "node4", "i")
	if err := c.fencer.Join(ctx); !errors.Is(err, fencing.ErrNoReservationLegs) {
		t.Fatalf("join without PR legs = %v", err)
	}
	if err := c.fencer.Fence(ctx, d.ref); !errors.Is(err, fencing.ErrNoReservationLegs) {
		t.Fatalf("fence without PR legs = %v", err)
	}
}

func TestReservationRefusesSelfAndForeignType(t *testing.T) {
	ctx := context.Background()
	r := newRig(fencetest.Options{})
	a := r.node(t, "node1", "i")
	if err := a.fencer.Join(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.fencer.Fence(ctx, a.ref); !errors.Is(err, fencing.ErrFenceSelf) {
		t.Fatalf("self fence = %v", err)
	}
	// A foreign exclusive-access reservation is reported, not overridden.
	r2 := newRig(fencetest.Options{})
	other := r2.targets[0].Initiator("other")
	if err := other.Register(ctx, 42); err != nil {
		t.Fatal(err)
	}
	if err := other.Reserve(ctx, 42, blockdev.ExclusiveAccess); err != nil {
		t.Fatal(err)
	}
	n := r2.node(t, "node1", "i")
	if err := n.fencer.Join(ctx); !errors.Is(err, fencing.ErrReservationMismatch) {
		t.Fatalf("join over foreign reservation = %v", err)
	}
}

func TestReservationLostHolderIsReReserved(t *testing.T) {
	ctx := context.Background()
	r := newRig(fencetest.Options{})
	a := r.node(t, "node1", "i")
	b := r.node(t, "node2", "i")
	for _, n := range []*node{a, b} {
		if err := n.fencer.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.fencer.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if r.targets[0].Reservation().Held {
		t.Fatal("holder left but reservation stayed")
	}
	if err := b.fencer.EnsureReserved(ctx); err != nil {
		t.Fatal(err)
	}
	if res := r.targets[0].Reservation(); !res.Held || res.Key != b.ref.Key {
		t.Fatalf("reservation = %+v, want node2's", res)
	}
	if err := a.write(0, 'x'); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("departed node write = %v", err)
	}
}

func TestKeyForIsPerIncarnation(t *testing.T) {
	seen := map[uint64]string{}
	for _, n := range []string{"node1", "node2", "node3"} {
		for _, inc := range []string{"1", "2", "3", "a", "b"} {
			k := fencing.KeyFor(n, inc)
			if k == 0 {
				t.Fatal("zero key")
			}
			if prev, dup := seen[k]; dup {
				t.Fatalf("key collision %s and %s/%s", prev, n, inc)
			}
			seen[k] = n + "/" + inc
			if fencing.KeyFor(n, inc) != k {
				t.Fatal("key not deterministic")
			}
		}
	}
	// Name and incarnation are separated, not concatenated.
	if fencing.KeyFor("node1", "2") == fencing.KeyFor("node12", "") {
		t.Fatal("ambiguous key derivation")
	}
}

func TestLegsByIndex(t *testing.T) {
	a := fencetest.NewTarget(fencetest.Options{}).Initiator("n")
	b := fencetest.NewTarget(fencetest.Options{}).Initiator("n")
	legs := fencing.LegsByIndex(map[int]blockdev.Device{2: b, 0: a, 1: plainDevice{a}})
	if len(legs) != 2 || legs[0].Name != "leg0" || legs[1].Name != "leg2" || legs[0].Dev != a || legs[1].Dev != b {
		t.Fatalf("legs %+v", legs)
	}
}

// plainDevice hides the reservation ability of a device.
type plainDevice struct{ blockdev.Device }
