package fencetest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fencing/fencetest"
)

// TestSPC4Rules checks the parts of SPC-4 that fencing relies on.
func TestSPC4Rules(t *testing.T) {
	ctx := context.Background()
	tg := fencetest.NewTarget(fencetest.Options{NoPreemptAndAbort: true})
	a, b, c := tg.Initiator("a"), tg.Initiator("b"), tg.Initiator("c")
	for i, in := range []*fencetest.Initiator{a, b} {
		if err := in.Register(ctx, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	// Reserving needs the caller's own registered key.
	if err := a.Reserve(ctx, 2, blockdev.WriteExclusiveRegistrantsOnly); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("reserve with another's key: %v", err)
	}
	if err := a.Reserve(ctx, 1, blockdev.WriteExclusiveRegistrantsOnly); err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(ctx, 2, blockdev.WriteExclusiveRegistrantsOnly); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("second reservation: %v", err)
	}
	buf := make([]byte, 512)
	if err := b.WriteAt(ctx, buf, 0); err != nil {
		t.Fatalf("registrant write: %v", err)
	}
	if err := c.WriteAt(ctx, buf, 0); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("non-registrant write: %v", err)
	}
	if err := c.ReadAt(ctx, buf, 0); err != nil {
		t.Fatalf("non-registrant read under write exclusive: %v", err)
	}
	// tgtd has no PREEMPT AND ABORT.
	if err := b.Preempt(ctx, 2, 1, blockdev.WriteExclusiveRegistrantsOnly, true); !errors.Is(err, blockdev.ErrNotSupported) {
		t.Fatalf("preempt and abort: %v", err)
	}
	// Preempting the holder moves the reservation to the preempter.
	if err := b.Preempt(ctx, 2, 1, blockdev.WriteExclusiveRegistrantsOnly, false); err != nil {
		t.Fatal(err)
	}
	if r := tg.Reservation(); !r.Held || r.Key != 2 {
		t.Fatalf("after preempting the holder: %+v", r)
	}
	// Preempting a key nobody holds is a conflict.
	if err := b.Preempt(ctx, 2, 1, blockdev.WriteExclusiveRegistrantsOnly, false); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("preempt of absent key: %v", err)
	}
	if err := a.WriteAt(ctx, buf, 0); !errors.Is(err, blockdev.ErrReservationConflict) {
		t.Fatalf("preempted write: %v", err)
	}
	keys, gen, err := c.ReadKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0] != 2 || gen == 0 {
		t.Fatalf("keys %v gen %d err %v", keys, gen, err)
	}
	// The holder leaving drops a registrants-only reservation.
	if err := b.Unregister(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if tg.Reservation().Held {
		t.Fatal("reservation outlived its holder")
	}
	if err := c.WriteAt(ctx, buf, 0); err != nil {
		t.Fatalf("write with no reservation: %v", err)
	}
	// Clear needs a registered key and drops everything.
	if err := a.Register(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if err := a.Clear(ctx, 9); err != nil || len(tg.Keys()) != 0 {
		t.Fatalf("clear: %v keys %v", err, tg.Keys())
	}
	tg.FailAll(blockdev.ErrIO)
	if _, _, err := a.ReadKeys(ctx); !errors.Is(err, blockdev.ErrIO) {
		t.Fatalf("failed target: %v", err)
	}
	nopr := fencetest.NewTarget(fencetest.Options{NoReservations: true}).Initiator("x")
	if err := nopr.Register(ctx, 1); !errors.Is(err, blockdev.ErrNotSupported) {
		t.Fatalf("no-PR target register: %v", err)
	}
}
