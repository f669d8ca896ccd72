package mirror

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
)

// areaGate is a leg path that, while shut, holds every write to the
// checksum areas until it is opened again.
type areaGate struct {
	blockdev.Device
	g       Geometry
	mu      sync.Mutex
	shut    chan struct{} // nil: open
	waiting chan struct{} // gets a value per write held
}

func (a *areaGate) close() {
	a.mu.Lock()
	a.shut = make(chan struct{})
	a.mu.Unlock()
}

func (a *areaGate) open() {
	a.mu.Lock()
	if a.shut != nil {
		close(a.shut)
		a.shut = nil
	}
	a.mu.Unlock()
}

func (a *areaGate) WriteAt(ctx context.Context, p []byte, off int64) error {
	if off >= a.g.ChecksumOffset && off < a.g.DataOffset {
		a.mu.Lock()
		shut := a.shut
		a.mu.Unlock()
		if shut != nil {
			a.waiting <- struct{}{}
			<-shut
		}
	}
	return a.Device.WriteAt(ctx, p, off)
}

func (a *areaGate) Close() error { return nil }

// TestWriteBackLeavesWritersGoing: while clean writes a region's cached
// checksum area back (the legs slow to take it), a write to another block
// of the region patches the area and completes instead of waiting for the
// disk. The block it patched stays dirty and its region marked after
// that write-back; the next one writes it, and the volume verifies clean
// with every acknowledged write in place.
func TestWriteBackLeavesWritersGoing(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	var gates []*areaGate
	n, err := r.tryOpen(0, func(c *Config) {
		c.ClearDelay = time.Hour // clean runs when the test says
		for i, d := range c.Legs {
			g := &areaGate{Device: d, waiting: make(chan struct{}, 16)}
			gates = append(gates, g)
			c.Legs[i] = g
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gates {
		g.g = n.vol.Geometry()
	}
	m := newModel()
	write := func(off int64, b byte) error {
		p := bytes.Repeat([]byte{b}, testBS)
		if err := n.vol.WriteAt(ctx, p, off); err != nil {
			return err
		}
		m.ack(off, p, 1)
		return nil
	}
	if err := write(0, 0xA1); err != nil {
		t.Fatal(err)
	}
	for _, g := range gates {
		g.close()
	}
	cleaned := make(chan error, 1)
	go func() { cleaned <- n.vol.clean(ctx, true) }()
	select {
	case <-gates[0].waiting:
	case <-gates[1].waiting:
	case err := <-cleaned:
		t.Fatalf("clean returned (%v) without writing the area back", err)
	case <-time.After(10 * time.Second):
		t.Fatal("clean wrote no checksum area back")
	}
	wrote := make(chan error, 1)
	go func() { wrote <- write(5*testBS, 0xB2) }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		for _, g := range gates {
			g.open()
		}
		<-wrote
		<-cleaned
		t.Fatal("a write to the region waited for its checksum area's write-back to reach the legs")
	}
	for _, g := range gates {
		g.open()
	}
	if err := <-cleaned; err != nil {
		t.Fatal(err)
	}
	if _, dirty := n.vol.csums.cached(); dirty != 1 {
		t.Fatalf("%d dirty areas after the write-back; want 1: the block patched during it", dirty)
	}
	if n.vol.DirtyRegions() == 0 {
		t.Fatal("the region's mark was cleared although a write patched its area during the write-back")
	}
	if err := n.vol.clean(ctx, true); err != nil {
		t.Fatal(err)
	}
	if c, dirty := n.vol.csums.cached(); c != 1 || dirty != 0 || n.vol.DirtyRegions() != 0 {
		t.Fatalf("after the second clean: %d areas cached, %d dirty, %d regions marked; want 1, 0, 0", c, dirty, n.vol.DirtyRegions())
	}
	m.check(t, n.vol)
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
	r.verifyClean()
}

// firstAreaGate holds the first write to the checksum areas on its leg
// once armed, until opened; later area writes pass and are counted.
type firstAreaGate struct {
	blockdev.Device
	g      Geometry
	mu     sync.Mutex
	armed  bool
	open   chan struct{}
	held   chan struct{} // gets a value when the first write is held
	passed atomic.Int64  // area writes let through since armed
}

func (a *firstAreaGate) WriteAt(ctx context.Context, p []byte, off int64) error {
	if off >= a.g.ChecksumOffset && off < a.g.DataOffset {
		a.mu.Lock()
		hold := a.armed
		a.armed = false
		a.mu.Unlock()
		if hold {
			a.held <- struct{}{}
			<-a.open
		} else {
			defer a.passed.Add(1)
		}
	}
	return a.Device.WriteAt(ctx, p, off)
}

func (a *firstAreaGate) Close() error { return nil }

// TestLateWriteBackNeverOverwritesANewerOne: clean's write-back of a
// region's area is slow to reach the legs; meanwhile a write patches the
// area again and a verify on this node makes the cache drop the area,
// writing the newer copy back. The older copy must not land after it (the
// drop waits for the write-back in flight): the legs end with the
// checksum of the last data, and the volume verifies clean.
func TestLateWriteBackNeverOverwritesANewerOne(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	var gates []*firstAreaGate
	n, err := r.tryOpen(0, func(c *Config) {
		c.ClearDelay = time.Hour // clean runs when the test says
		for i, d := range c.Legs {
			g := &firstAreaGate{Device: d, open: make(chan struct{}), held: make(chan struct{}, 1)}
			gates = append(gates, g)
			c.Legs[i] = g
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gates {
		g.g = n.vol.Geometry()
	}
	m := newModel()
	write := func(b byte) {
		p := bytes.Repeat([]byte{b}, testBS)
		if err := n.vol.WriteAt(ctx, p, 0); err != nil {
			t.Fatal(err)
		}
		m.ack(0, p, 1)
	}
	write(0xA1)
	for _, g := range gates {
		g.mu.Lock()
		g.armed = true
		g.mu.Unlock()
	}
	cleaned := make(chan error, 1)
	go func() { cleaned <- n.vol.clean(ctx, true) }()
	for _, g := range gates {
		select {
		case <-g.held:
		case <-time.After(10 * time.Second):
			t.Fatal("clean wrote no checksum area back")
		}
	}
	write(0xB2) // patches the area while its older copy is on the way
	verified := make(chan error, 1)
	go func() {
		_, err := n.vol.Verify(ctx) // drops the area first (forget)
		verified <- err
	}()
	// Give a drop that does not wait for the write-back in flight the
	// time to overtake it (one that waits changes nothing here).
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) && gates[0].passed.Load()+gates[1].passed.Load() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	for _, g := range gates {
		close(g.open)
	}
	if err := <-cleaned; err != nil {
		t.Fatal(err)
	}
	if err := <-verified; err != nil {
		t.Fatal(err)
	}
	m.check(t, n.vol)
	if err := n.vol.Close(); err != nil {
		t.Fatal(err)
	}
	r.verifyClean()
}
