package mirror

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
)

const (
	testBS     = 512
	testRegion = 16 << 10
	testLeg    = 2 << 20
)

// rig is a shared volume in memory: the legs (shared disks), one store and
// one lock table (the cluster), and nodes opening it through their own
// fault-injectable paths.
type rig struct {
	t      testing.TB
	legs   []*blockdev.Mem
	store  *MemStateStore
	locker *LocalLocker
	// noVerify says why the volume is left in a state Verify reports
	// (empty: it is verified when the test ends).
	noVerify string
	// callerOrders opens the nodes with CallerOrdersWrites (the tests'
	// writers order overlapping writes with application locks).
	callerOrders bool
}

// newRig formats a volume and arranges for Verify to run over it when the
// test ends (as bbolt runs Check after every test): every problem Verify
// finds fails the test, unless the test already failed or said why its
// volume is left unclean (skipVerify).
func newRig(t testing.TB, nlegs, slots int) *rig {
	t.Helper()
	r := &rig{t: t, store: NewMemStateStore(), locker: NewLocalLocker()}
	t.Cleanup(func() {
		if t.Failed() || t.Skipped() {
			return
		}
		if r.noVerify != "" {
			return
		}
		r.verifyAtEnd()
	})
	var devs []blockdev.Device
	for i := 0; i < nlegs; i++ {
		m, err := blockdev.NewMem(testLeg, testBS)
		if err != nil {
			t.Fatal(err)
		}
		r.legs = append(r.legs, m)
		devs = append(devs, m)
	}
	if _, err := Format(context.Background(), devs, FormatOptions{RegionSize: testRegion, Slots: slots, ClusterID: "test", DataIsZero: true}); err != nil {
		t.Fatal(err)
	}
	return r
}

// extra holds legs added during a test, by address.
var extraMu sync.Mutex
var extraLegs = map[string]*blockdev.Mem{}

func (r *rig) addLeg(addr string) *blockdev.Mem {
	m, err := blockdev.NewMem(testLeg, testBS)
	if err != nil {
		r.t.Fatal(err)
	}
	extraMu.Lock()
	extraLegs[addr] = m
	extraMu.Unlock()
	return m
}

func (r *rig) openByAddr(ctx context.Context, addr string) (blockdev.Device, error) {
	extraMu.Lock()
	defer extraMu.Unlock()
	if m := extraLegs[addr]; m != nil {
		return blockdev.NewFaulty(m), nil
	}
	return nil, fmt.Errorf("no leg at %q", addr)
}

func (r *rig) asDevices() []blockdev.Device {
	var ds []blockdev.Device
	for _, m := range r.legs {
		ds = append(ds, m)
	}
	return ds
}

// addResyncingLeg adds a new leg at addr to the volume through slot 0's
// node, closed again after: the leg waits in the resyncing state for a
// full resync. It returns the leg's device and its UUID.
func (r *rig) addResyncingLeg(addr string) (*blockdev.Mem, uuid.UUID) {
	r.t.Helper()
	n := r.open(0)
	defer n.vol.Close()
	m := r.addLeg(addr)
	if _, err := n.vol.AddLeg(context.Background(), blockdev.NewFaulty(m), addr, false); err != nil {
		r.t.Fatal(err)
	}
	t := n.vol.Table()
	return m, t.Legs[len(t.Legs)-1].UUID
}

// node is one node's view: its own paths to every leg.
type node struct {
	vol   *Volume
	paths []*blockdev.Faulty
}

func (r *rig) open(slot int) *node {
	r.t.Helper()
	n, err := r.tryOpen(slot, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

func (r *rig) tryOpen(slot int, tweak func(*Config)) (*node, error) {
	n := &node{}
	cfg := FastConfig(slot)
	for _, m := range r.legs {
		p := blockdev.NewFaulty(m)
		n.paths = append(n.paths, p)
		cfg.Legs = append(cfg.Legs, p)
	}
	cfg.Store, cfg.Locker = r.store, r.locker
	cfg.Logger = testlog.New(r.t, "mirror")
	cfg.OpenLeg = r.openByAddr
	cfg.CallerOrdersWrites = r.callerOrders
	if tweak != nil {
		tweak(&cfg)
	}
	v, err := Open(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	n.vol = v
	return n, nil
}

// skipVerify leaves the volume unverified when the test ends, for the
// reason given.
func (r *rig) skipVerify(why string) { r.noVerify = why }

// verifyClean opens a tool view and runs Verify, failing on any problem.
func (r *rig) verifyClean() VerifyReport {
	r.t.Helper()
	n := r.open(NoSlot)
	defer n.vol.Close()
	rep, err := n.vol.Verify(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, p := range rep.Problems {
		r.t.Errorf("verify: %s", p)
	}
	return rep
}

// verifyAtEnd runs Verify over copies of the legs (a test may have closed
// the legs themselves by closing a volume opened on them), keeping every
// write that reached them, and leaving out the legs the newest leg table
// no longer lists (removed by the test).
func (r *rig) verifyAtEnd() {
	r.t.Helper()
	ctx := context.Background()
	all := blockdev.CrashOptions{KeepProbability: 1}
	var clones []blockdev.Device
	var sbs []Superblock
	var table LegTable
	for _, m := range r.legs {
		c := m.CrashClone(all)
		sb, err := ReadSuperblock(ctx, c)
		if err != nil {
			r.t.Errorf("verify at the end of the test: %v", err)
			return
		}
		clones, sbs = append(clones, c), append(sbs, sb)
		if sb.Table.Generation > table.Generation {
			table = sb.Table
		}
	}
	if stored, ok, err := r.store.Load(ctx, sbs[0].Volume); err == nil && ok && stored.Generation >= table.Generation {
		table = stored
	}
	cfg := FastConfig(NoSlot)
	for i, c := range clones {
		for _, l := range table.Legs {
			if l.UUID == sbs[i].Self {
				cfg.Legs = append(cfg.Legs, c)
			}
		}
	}
	cfg.Store, cfg.Locker = r.store, r.locker
	cfg.Logger = testlog.New(r.t, "verify")
	cfg.OpenLeg = func(ctx context.Context, addr string) (blockdev.Device, error) {
		extraMu.Lock()
		defer extraMu.Unlock()
		if m := extraLegs[addr]; m != nil {
			return m.CrashClone(all), nil
		}
		return nil, fmt.Errorf("no leg at %q", addr)
	}
	v, err := Open(context.Background(), cfg)
	if err != nil {
		r.t.Errorf("verify at the end of the test: %v", err)
		return
	}
	defer v.Close()
	rep, err := v.Verify(context.Background())
	if err != nil {
		r.t.Errorf("verify at the end of the test: %v", err)
		return
	}
	for _, p := range rep.Problems {
		r.t.Errorf("verify at the end of the test: %s", p)
	}
}

// legsIdentical compares the data areas of the in-sync legs byte for byte.
func (r *rig) legsIdentical(g Geometry, legs ...int) {
	r.t.Helper()
	first := r.legs[legs[0]].Peek(g.DataOffset, g.VolumeSize())
	for _, i := range legs[1:] {
		if !bytes.Equal(first, r.legs[i].Peek(g.DataOffset, g.VolumeSize())) {
			r.t.Fatalf("leg %d differs from leg %d", i, legs[0])
		}
	}
}

// randBlock returns n bytes from rng, eight per draw (byte by byte, the
// race detector makes filling megabytes take seconds).
func randBlock(rng *rand.Rand, n int) []byte {
	b := make([]byte, (n+7)/8*8)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

func seedFor(t testing.TB) uint64 {
	s := uint64(time.Now().UnixNano())
	t.Logf("seed %d", s)
	return s
}

// writer writes random blocks under application locks and remembers the
// last acknowledged contents of every block it wrote.
type model struct {
	mu    sync.Mutex
	acked map[int64][]byte   // block offset -> acknowledged data
	maybe map[int64][][]byte // writes that failed or were cut off: may or may not be there
}

func newModel() *model { return &model{acked: map[int64][]byte{}, maybe: map[int64][][]byte{}} }

func (m *model) ack(off int64, data []byte, blocks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for b := 0; b < blocks; b++ {
		o := off + int64(b*testBS)
		m.acked[o] = data[b*testBS : (b+1)*testBS]
		delete(m.maybe, o)
	}
}

func (m *model) unknown(off int64, data []byte, blocks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for b := 0; b < blocks; b++ {
		o := off + int64(b*testBS)
		m.maybe[o] = append(m.maybe[o], data[b*testBS:(b+1)*testBS])
	}
}

// check reads every modelled block through v.
func (m *model) check(t testing.TB, v *Volume) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	buf := make([]byte, testBS)
	offs := map[int64]bool{}
	for o := range m.acked {
		offs[o] = true
	}
	for o := range m.maybe {
		offs[o] = true
	}
	for o := range offs {
		if err := v.ReadAt(context.Background(), buf, o); err != nil {
			t.Fatalf("read %d: %v", o, err)
		}
		want, ok := m.acked[o]
		if !ok {
			want = make([]byte, testBS)
		}
		if bytes.Equal(buf, want) {
			continue
		}
		found := false
		for _, alt := range m.maybe[o] {
			if bytes.Equal(buf, alt) {
				found = true
			}
		}
		if !found {
			t.Fatalf("block at %d lost its acknowledged write", o)
		}
	}
}
