package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/blockdev/mirror/etcdstate"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storedlm"
)

// The demo's volume: two image files of 256 MiB, 1 MiB regions, 8 slots.
const (
	demoLegSize = 256 << 20
	demoRegion  = 1 << 20
	demoSlots   = 8
)

var prefix = keys.Cluster("benchstore").Root()

// rig is the shared volume, a one-member etcd and the nodes on them.
type rig struct {
	dir  string
	log  hclog.Logger
	etcd *etcdtest.Cluster
	legs []string
}

// node is one store instance with its own lock-manager member, volume
// slot and etcd client, as a node of the cluster has.
type node struct {
	name   string
	slot   int
	cli    *clientv3.Client
	member *dlm.LeaseMember
	locks  *dlm.Node
	dead   *atomic.Bool // set: the node's disks refuse all I/O (a crash)
	io     *ioCounts    // the node's leg I/O
	vol    *mirror.Volume
	st     *store.Store
	rl     *regionLocks
}

func newRig(dir string, log hclog.Logger) (*rig, error) {
	r := &rig{dir: dir, log: log}
	for i := 0; i < 2; i++ {
		r.legs = append(r.legs, filepath.Join(dir, fmt.Sprintf("leg%d.img", i)))
	}
	var devs []blockdev.Device
	for _, p := range r.legs {
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{Create: true, CreateSize: demoLegSize, Logger: log})
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	_, err := mirror.Format(context.Background(), devs, mirror.FormatOptions{RegionSize: demoRegion, Slots: demoSlots, ClusterID: "benchstore", DataIsZero: true})
	for _, d := range devs {
		d.Close()
	}
	if err != nil {
		return nil, err
	}
	c, err := etcdtest.Start(filepath.Join(dir, "etcd"), 1, etcdtest.Options{})
	if err != nil {
		return nil, err
	}
	r.etcd = c
	return r, nil
}

func (r *rig) close() {
	if r.etcd != nil {
		r.etcd.Close()
	}
}

// killable fails every I/O once its node is dead, as a crashed node's
// disks would see nothing more from it, and counts the node's leg I/O.
type killable struct {
	blockdev.Device
	dead *atomic.Bool
	io   *ioCounts
}

// ioCounts are a node's leg writes and flushes (both legs together).
type ioCounts struct{ writes, flushes, writeNs, flushNs, lockNs, storeLockNs atomic.Int64 }

// cost is what a node asked of etcd and of its legs.
type cost struct{ etcd, callbacks, writes, flushes, writeNs, flushNs, lockNs, storeLockNs int64 }

func (n *node) cost() cost {
	return cost{int64(n.locks.EtcdWrites()), int64(n.locks.Stats().BlockingCallbacks), n.io.writes.Load(), n.io.flushes.Load(), n.io.writeNs.Load(), n.io.flushNs.Load(), n.io.lockNs.Load(), n.io.storeLockNs.Load()}
}

// per says c-since per operation, for a row's note.
func (c cost) per(since cost, ops float64) string {
	if ops <= 0 {
		return ""
	}
	ms := func(ns int64) float64 { return float64(ns) / 1e6 / ops }
	return fmt.Sprintf("per op: %.2f etcd writes, %.2f blocking callbacks, %.1f leg writes (%.2f ms), %.1f leg flushes (%.2f ms), region locks %.2f ms, store locks %.2f ms",
		float64(c.etcd-since.etcd)/ops, float64(c.callbacks-since.callbacks)/ops, float64(c.writes-since.writes)/ops, ms(c.writeNs-since.writeNs),
		float64(c.flushes-since.flushes)/ops, ms(c.flushNs-since.flushNs), ms(c.lockNs-since.lockNs), ms(c.storeLockNs-since.storeLockNs))
}

func (k killable) check() error {
	if k.dead.Load() {
		return fmt.Errorf("%w: node is dead", blockdev.ErrIO)
	}
	return nil
}

func (k killable) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := k.check(); err != nil {
		return err
	}
	return k.Device.ReadAt(ctx, p, off)
}

func (k killable) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := k.check(); err != nil {
		return err
	}
	k.io.writes.Add(1)
	t := time.Now()
	defer func() { k.io.writeNs.Add(int64(time.Since(t))) }()
	return k.Device.WriteAt(ctx, p, off)
}

func (k killable) Flush(ctx context.Context) error {
	if err := k.check(); err != nil {
		return err
	}
	k.io.flushes.Add(1)
	t := time.Now()
	defer func() { k.io.flushNs.Add(int64(time.Since(t))) }()
	return k.Device.Flush(ctx)
}

// legCounts are the writes and flushes of a volume's legs (both together).
type legCounts struct{ writes, flushes atomic.Int64 }

// countedLeg counts a leg's writes and flushes, and does nothing more (a
// benchmark's leg: no clock is read).
type countedLeg struct {
	blockdev.Device
	n *legCounts
}

func (c countedLeg) WriteAt(ctx context.Context, p []byte, off int64) error {
	c.n.writes.Add(1)
	return c.Device.WriteAt(ctx, p, off)
}

func (c countedLeg) Flush(ctx context.Context) error {
	c.n.flushes.Add(1)
	return c.Device.Flush(ctx)
}

// timedLocker counts the time the store waits for its locks.
type timedLocker struct {
	store.Locker
	io *ioCounts
}

func (t timedLocker) Lock(ctx context.Context, name string, mode store.LockMode, opts store.LockOptions) (store.Lock, error) {
	start := time.Now()
	defer func() { t.io.storeLockNs.Add(int64(time.Since(start))) }()
	return t.Locker.Lock(ctx, name, mode, opts)
}

// regionLocks gives the mirror its region locks from the lock manager, as
// the node does.
type regionLocks struct {
	d  *dlm.Node
	io *ioCounts
}

func (r *regionLocks) acquire(ctx context.Context, req mirror.RegionRequest) (*dlm.Lock, error) {
	t := time.Now()
	defer func() { r.io.lockNs.Add(int64(time.Since(t))) }()
	mode := dlm.PR
	if req.Exclusive {
		mode = dlm.EX
	}
	var opts []dlm.Option
	if req.Recovery {
		opts = append(opts, dlm.Recovery())
	}
	return r.d.Acquire(ctx, dlm.Region(req.Volume, uint64(req.Off), uint64(req.Off+req.Length)), mode, opts...)
}

func (r *regionLocks) LockRegion(ctx context.Context, req mirror.RegionRequest) (mirror.RegionLock, error) {
	l, err := r.acquire(ctx, req)
	if err != nil {
		return nil, err
	}
	return regionLock{l}, nil
}

// regionLock is a held dlm lock as the mirror sees it.
type regionLock struct{ l *dlm.Lock }

func (l regionLock) Token() uint64 { return uint64(l.l.Token()) }
func (l regionLock) Use() error    { return l.l.Use() }
func (l regionLock) Release()      { l.l.Release() }

func (r *regionLocks) HoldRegion(ctx context.Context, req mirror.RegionRequest) (mirror.RegionHold, error) {
	l, err := r.acquire(ctx, req)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// startNode joins the lock manager as name and opens the volume and, if
// openStore, the store in slot.
func (r *rig) startNode(ctx context.Context, name string, slot int, openStore bool) (*node, error) {
	n := &node{name: name, slot: slot, dead: new(atomic.Bool), io: new(ioCounts)}
	var err error
	if n.cli, err = r.etcd.NewClientTo(r.etcd.Endpoints); err != nil {
		return nil, err
	}
	n.member, err = dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: n.cli, Prefix: prefix, Name: name, TTL: 5 * time.Second, Margin: time.Second, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		n.cli.Close()
		return nil, err
	}
	dcfg := dlm.DefaultConfig()
	dcfg.Client, dcfg.Member, dcfg.Prefix = n.cli, n.member, prefix
	if n.locks, err = dlm.Start(ctx, dcfg); err != nil {
		n.member.Leave(ctx)
		n.cli.Close()
		return nil, err
	}
	n.rl = &regionLocks{d: n.locks, io: n.io}
	mcfg := mirror.DefaultConfig(slot)
	for _, p := range r.legs {
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{Logger: r.log})
		if err != nil {
			n.stop(ctx)
			return nil, err
		}
		mcfg.Legs = append(mcfg.Legs, killable{d, n.dead, n.io})
	}
	mcfg.Locker, mcfg.Store, mcfg.Logger = n.rl, etcdstate.New(n.cli, prefix), r.log.Named(name)
	mcfg.CallerOrdersWrites = true // the store orders its writes
	if n.vol, err = mirror.Open(ctx, mcfg); err != nil {
		for _, d := range mcfg.Legs {
			d.Close()
		}
		n.stop(ctx)
		return nil, err
	}
	if openStore {
		if err := n.openStore(ctx, r.log); err != nil {
			n.stop(ctx)
			return nil, err
		}
	}
	return n, nil
}

func (n *node) openStore(ctx context.Context, log hclog.Logger) error {
	cfg := store.DefaultConfig(n.vol, n.slot, timedLocker{storedlm.New(n.locks), n.io})
	cfg.Logger = log.Named(n.name)
	// The journal replay of a dead node writes with recovery locks.
	cfg.RecoveryDevice = n.vol.RecoveryWriter()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		return err
	}
	n.st = st
	return nil
}

// stop closes the node cleanly: store, volume, lock manager, lease.
func (n *node) stop(ctx context.Context) error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	if n.st != nil {
		keep(n.st.Close())
	}
	if n.vol != nil {
		keep(n.vol.Close())
	}
	if n.locks != nil {
		keep(n.locks.Close(ctx))
	}
	if n.member != nil {
		keep(n.member.Leave(ctx))
	}
	keep(n.cli.Close())
	return first
}

// crash kills the node as a power cut would: etcd and its disks hear
// nothing more from it, its lease is revoked through survivor's client
// (its locks become orphans for recovery), and what it had in memory is
// abandoned.
func (n *node) crash(ctx context.Context, survivor *node) error {
	n.cli.Close()
	n.dead.Store(true)
	n.member.Stop()
	if _, err := survivor.cli.Revoke(ctx, n.member.LeaseID()); err != nil {
		return fmt.Errorf("revoke the lease of %s: %w", n.name, err)
	}
	return nil
}

// release frees what is left of a crashed node's handles (their I/O
// fails; nothing reaches the disks).
func (n *node) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n.st != nil {
		n.st.Close()
	}
	n.vol.Close()
	n.locks.Close(ctx)
}

// recover does what the recovery coordinator does for dead node d, on
// node c: wait until the lock manager counts d dead, recover d's volume
// slot and release its region locks, replay its journal (the returned
// figures), release its other locks.
func (c *node) recover(ctx context.Context, d *node) (store.ReplayStats, error) {
	if err := c.locks.WaitDead(ctx, d.member.Owner()); err != nil {
		return store.ReplayStats{}, err
	}
	if _, err := c.vol.RecoverFenced(ctx, d.slot); err != nil {
		return store.ReplayStats{}, fmt.Errorf("recover volume slot %d: %w", d.slot, err)
	}
	if _, err := c.locks.ReleaseDeadRegions(ctx, d.member.Owner(), c.vol.LockNamespaces()...); err != nil {
		return store.ReplayStats{}, fmt.Errorf("release the region locks of %s: %w", d.member.Owner(), err)
	}
	st, err := c.st.ReplaySlot(ctx, d.slot)
	if err != nil {
		return st, fmt.Errorf("replay slot %d: %w", d.slot, err)
	}
	if err := c.locks.ReleaseDead(ctx, d.member.Owner()); err != nil {
		return st, err
	}
	return st, nil
}

// scratchVolume formats two new legs of the demo's geometry and opens
// them in slot 0 with n's lock manager; cleanup closes and removes them.
// io counts the volume's writes and flushes of its legs.
func (r *rig) scratchVolume(ctx context.Context, n *node) (vol *mirror.Volume, cleanup func(), io *legCounts, err error) {
	var devs []blockdev.Device
	var paths []string
	remove := func() {
		for _, d := range devs {
			d.Close()
		}
		for _, p := range paths {
			os.Remove(p)
		}
	}
	for i := 0; i < 2; i++ {
		p := filepath.Join(r.dir, fmt.Sprintf("scratch-%s-%d.img", n.name, i))
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{Create: true, CreateSize: demoLegSize, Logger: r.log})
		if err != nil {
			remove()
			return nil, nil, nil, err
		}
		devs, paths = append(devs, d), append(paths, p)
	}
	if _, err := mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: demoRegion, Slots: demoSlots, ClusterID: "benchstore-scratch", DataIsZero: true}); err != nil {
		remove()
		return nil, nil, nil, err
	}
	io = new(legCounts)
	cfg := mirror.DefaultConfig(0)
	for _, d := range devs {
		cfg.Legs = append(cfg.Legs, countedLeg{d, io})
	}
	cfg.Locker, cfg.Logger = n.rl, r.log.Named("scratch")
	cfg.Store = etcdstate.New(n.cli, prefix)
	cfg.CallerOrdersWrites = true
	v, err := mirror.Open(ctx, cfg)
	if err != nil {
		remove()
		return nil, nil, nil, err
	}
	return v, func() {
		v.Close() // closes the legs
		for _, p := range paths {
			os.Remove(p)
		}
	}, io, nil
}
