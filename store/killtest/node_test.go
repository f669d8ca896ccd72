// Package killtest kills store nodes that are real processes (SIGKILL, in
// the middle of their transactions) and checks what the survivors recover:
// the store, the mirrored volume under it (two file legs) and the lock
// manager over an embedded etcd, as in a cluster.
package killtest

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/blockdev/mirror/etcdstate"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storedlm"
)

var prefix = keys.Cluster("killtest").Root()

const (
	legSize = 64 << 20
	region  = 1 << 20
	slots   = 4
)

// node is one store node: lock-manager member, volume slot, store slot.
type node struct {
	name   string
	slot   int
	cli    *clientv3.Client
	member *dlm.LeaseMember
	locks  *dlm.Node
	rl     *regionLocks
	vol    *mirror.Volume
	st     *store.Store
}

// regionLocks gives the mirror its region locks from the lock manager.
type regionLocks struct{ d *dlm.Node }

func (r *regionLocks) acquire(ctx context.Context, req mirror.RegionRequest) (*dlm.Lock, error) {
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

// legPaths are the volume's two legs under dir.
func legPaths(dir string) []string {
	return []string{filepath.Join(dir, "leg0.img"), filepath.Join(dir, "leg1.img")}
}

// formatVolume makes the legs and the mirror on them.
func formatVolume(ctx context.Context, dir string) error {
	var devs []blockdev.Device
	for _, p := range legPaths(dir) {
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{Create: true, CreateSize: legSize})
		if err != nil {
			return err
		}
		devs = append(devs, d)
	}
	_, err := mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: region, Slots: slots, ClusterID: "killtest", DataIsZero: true})
	for _, d := range devs {
		d.Close()
	}
	return err
}

// startNode joins the lock manager and opens the volume in slot.
func startNode(ctx context.Context, endpoints []string, dir, name string, slot int, log hclog.Logger) (*node, error) {
	n := &node{name: name, slot: slot}
	var err error
	n.cli, err = clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
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
		n.close(ctx)
		return nil, err
	}
	n.rl = &regionLocks{d: n.locks}
	mcfg := mirror.FastConfig(slot)
	for _, p := range legPaths(dir) {
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{Logger: log})
		if err != nil {
			n.close(ctx)
			return nil, err
		}
		mcfg.Legs = append(mcfg.Legs, d)
	}
	mcfg.Locker, mcfg.Store, mcfg.Logger = n.rl, etcdstate.New(n.cli, prefix), log.Named("volume")
	mcfg.CallerOrdersWrites = true
	if n.vol, err = mirror.Open(ctx, mcfg); err != nil {
		for _, d := range mcfg.Legs {
			d.Close()
		}
		n.close(ctx)
		return nil, err
	}
	return n, nil
}

func (n *node) openStore(ctx context.Context, log hclog.Logger, handlers map[string]store.Handler, tweak ...func(*store.Config)) error {
	cfg := store.DefaultConfig(n.vol, n.slot, storedlm.New(n.locks))
	cfg.Logger, cfg.Handlers = log.Named("store"), handlers
	for _, f := range tweak {
		f(&cfg)
	}
	// The journal replay of a dead node writes with recovery locks.
	cfg.RecoveryDevice = n.vol.RecoveryWriter()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		return err
	}
	n.st = st
	return nil
}

// close stops the node cleanly.
func (n *node) close(ctx context.Context) error {
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

// recover is the recovery coordinator's work for a dead node (owner o,
// slot): wait until the lock manager counts it dead, recover its volume
// slot and release its region locks, replay its store journal, release its
// other locks.
func (n *node) recover(ctx context.Context, o dlm.Owner, slot int) (store.ReplayStats, error) {
	if err := n.locks.WaitDead(ctx, o); err != nil {
		return store.ReplayStats{}, fmt.Errorf("wait for %s to be dead: %w", o, err)
	}
	if _, err := n.vol.RecoverFenced(ctx, slot); err != nil {
		return store.ReplayStats{}, fmt.Errorf("recover volume slot %d: %w", slot, err)
	}
	// As the node's resync step: the dead node's region locks go once its
	// slot is resynced, before the replay needs what writers behind them
	// hold.
	if _, err := n.locks.ReleaseDeadRegions(ctx, o, n.vol.LockNamespaces()...); err != nil {
		return store.ReplayStats{}, fmt.Errorf("release the region locks of %s: %w", o, err)
	}
	st, err := n.st.ReplaySlot(ctx, slot)
	if err != nil {
		return st, fmt.Errorf("replay slot %d: %w", slot, err)
	}
	return st, n.locks.ReleaseDead(ctx, o)
}
