package mirror

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// countingLocker counts a LocalLocker's lock and hold requests.
type countingLocker struct {
	*LocalLocker
	locks, holds atomic.Int64
	// sameNode: holds get no blocking callback, as the lock manager sends
	// none for a conflict between two locks of one node.
	sameNode bool
}

func (c *countingLocker) LockRegion(ctx context.Context, req RegionRequest) (RegionLock, error) {
	c.locks.Add(1)
	return c.LocalLocker.LockRegion(ctx, req)
}

func (c *countingLocker) HoldRegion(ctx context.Context, req RegionRequest) (RegionHold, error) {
	c.holds.Add(1)
	h, err := c.LocalLocker.HoldRegion(ctx, req)
	if err != nil || !c.sameNode {
		return h, err
	}
	return quietHold{h}, nil
}

// quietHold is a hold whose blocking callback never comes.
type quietHold struct{ RegionHold }

func (quietHold) Blocking() <-chan struct{} { return nil }

// TestOrderedWritesKeepTheirRegionHolds: ordered writes to a few regions
// ask the locker for one hold per region, not for a lock per write, and
// every write still checks its hold (Use) before its data goes out.
func TestOrderedWritesKeepTheirRegionHolds(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	r.callerOrders = true
	cl := &countingLocker{LocalLocker: r.locker}
	n, err := r.tryOpen(0, func(c *Config) { c.Locker = cl })
	if err != nil {
		t.Fatal(err)
	}
	m := newModel()
	const writes = 100
	for i := 0; i < writes; i++ {
		off := int64(i%4)*testRegion + int64(i%8)*testBS
		p := bytes.Repeat([]byte{byte(i)}, testBS)
		if err := n.vol.WriteAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
		m.ack(off, p, 1)
	}
	// Data holds and checksum holds: 4 regions each.
	if locks, holds := cl.locks.Load(), cl.holds.Load(); locks != 0 || holds != 8 {
		t.Fatalf("%d writes to 4 regions asked for %d locks and %d holds; want 0 and 8", writes, locks, holds)
	}
	if k := n.vol.dholds.kept(); k != 4 {
		t.Fatalf("%d region holds kept; want 4", k)
	}
	m.check(t, n.vol)
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
	if held := r.locker.Held(); held != 0 {
		t.Fatalf("%d locks still held after Close", held)
	}
}

// TestKeptRegionHoldsGiveWayOnThisNode: the lock manager sends no blocking
// callback for a conflict between two locks of one node, so a verify, a
// scrub and a read repair of this node (exclusive region locks) would wait
// for ever for the region holds its ordered writes keep, unless the holds
// are given up first. Each finishes within its deadline, and the writes
// keep their holds again afterwards.
func TestKeptRegionHoldsGiveWayOnThisNode(t *testing.T) {
	r := newRig(t, 2, 1)
	r.callerOrders = true
	cl := &countingLocker{LocalLocker: r.locker, sameNode: true}
	n, err := r.tryOpen(0, func(c *Config) { c.Locker = cl })
	if err != nil {
		t.Fatal(err)
	}
	m := newModel()
	write := func(i int) {
		t.Helper()
		off := int64(i%3)*testRegion + int64(i)*testBS
		p := bytes.Repeat([]byte{byte(i + 1)}, testBS)
		if err := n.vol.WriteAt(context.Background(), p, off); err != nil {
			t.Fatal(err)
		}
		m.ack(off, p, 1)
	}
	for i := 0; i < 3; i++ {
		write(i)
	}
	if k := n.vol.dholds.kept(); k != 3 {
		t.Fatalf("%d region holds kept; want 3", k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := n.vol.Verify(ctx)
	if err != nil {
		t.Fatalf("verify on the writing node: %v", err)
	}
	for _, p := range rep.Problems {
		t.Errorf("verify: %s", p)
	}
	write(3)
	if _, err := n.vol.Scrub(ctx, ScrubOptions{Repair: true}); err != nil {
		t.Fatalf("scrub on the writing node: %v", err)
	}
	write(4)
	// A damaged copy on leg 1: the read repair locks the range exclusively.
	off := int64(4%3)*testRegion + 4*testBS
	r.legs[1].Poke(n.vol.Geometry().DataOffset+off, bytes.Repeat([]byte{0xEE}, testBS))
	got := make([]byte, testBS)
	valid := func(b []byte) bool { return b[0] == 5 }
	if err := n.vol.ReadVerified(ctx, got, off, valid); err != nil {
		t.Fatalf("verified read: %v", err)
	}
	for i := 5; i < 8; i++ {
		write(i)
	}
	if k := n.vol.dholds.kept(); k != 3 {
		t.Fatalf("%d region holds kept after the exclusive locks; want 3 again", k)
	}
	m.check(t, n.vol)
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestKeptRegionHoldGivesWayToAnotherNode: another node's verify asks for
// the regions exclusively; the holds node 0 keeps are given up at the
// blocking callback (no write is in flight), and node 0's next writes take
// them again.
func TestKeptRegionHoldGivesWayToAnotherNode(t *testing.T) {
	r := newRig(t, 2, 2)
	r.callerOrders = true
	writer, other := r.open(0), r.open(1)
	p := bytes.Repeat([]byte{7}, testBS)
	for i := int64(0); i < 3; i++ {
		if err := writer.vol.WriteAt(context.Background(), p, i*testRegion); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := other.vol.Verify(ctx); err != nil {
		t.Fatalf("verify on another node: %v", err)
	}
	if err := writer.vol.WriteAt(ctx, p, testRegion); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{writer, other} {
		if err := n.vol.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
