package mirror

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
)

// TestOpenVolumeMarker: a node's open slot is marked on every leg from Open
// to Close; format (even forced) and add-leg into another volume refuse
// such a leg unless told ForceWhileOpen; the recovery of a crashed node's
// slot clears its marker.
func TestOpenVolumeMarker(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 4)
	openSlots := func(leg int) []int {
		t.Helper()
		s, err := OpenSlots(ctx, r.legs[leg])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := openSlots(0); len(s) != 0 {
		t.Fatalf("fresh volume has open slots %v", s)
	}
	n1, n2 := r.open(1), r.open(2)
	for leg := range r.legs {
		if s := openSlots(leg); !reflect.DeepEqual(s, []int{1, 2}) {
			t.Fatalf("leg %d: open slots %v, want [1 2]", leg, s)
		}
	}
	if _, err := Format(ctx, r.asDevices(), FormatOptions{RegionSize: testRegion, Slots: 4, Force: true}); !errors.Is(err, ErrVolumeOpen) {
		t.Fatalf("forced format of an open volume: %v", err)
	}
	other := newRig(t, 1, 1)
	tool := other.open(NoSlot)
	if _, err := tool.vol.AddLeg(ctx, blockdev.NewFaulty(r.legs[1]), "x", true); !errors.Is(err, ErrVolumeOpen) {
		t.Fatalf("forced add-leg of another open volume's leg: %v", err)
	}
	tool.vol.Close()
	if err := n1.vol.Close(); err != nil {
		t.Fatal(err)
	}
	if s := openSlots(0); !reflect.DeepEqual(s, []int{2}) {
		t.Fatalf("after slot 1 closed: open slots %v", s)
	}
	// Slot 2's node crashes: its paths die without Close. Recovery of its
	// slot clears the marker.
	for _, p := range n2.paths {
		p.SetOffline(true)
	}
	n3 := r.open(3)
	if _, err := n3.vol.Recover(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := n3.vol.Close(); err != nil {
		t.Fatal(err)
	}
	if s := openSlots(0); len(s) != 0 {
		t.Fatalf("after recovery and close: open slots %v", s)
	}
	if _, err := Format(ctx, r.asDevices(), FormatOptions{RegionSize: testRegion, Slots: 4}); !errors.Is(err, ErrLegNotBlank) {
		t.Fatalf("unforced format over a volume: %v", err)
	}
	if _, err := Format(ctx, r.asDevices(), FormatOptions{RegionSize: testRegion, Slots: 4, Force: true}); err != nil {
		t.Fatal(err)
	}
}
