package etcdstate_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/blockdev/mirror/etcdstate"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// startEtcd starts a one-member embedded etcd for the test.
func startEtcd(t *testing.T) *clientv3.Client {
	return etcdtest.NewCluster(t, 1).Client(0)
}

// TestLegFailureVisibleClusterWide: two nodes share a volume through etcd;
// a leg failed by one is failed for the other and in the superblocks.
func TestLegFailureVisibleClusterWide(t *testing.T) {
	ctx := context.Background()
	cli := startEtcd(t)
	store := etcdstate.New(cli, "/shoal-test")
	var legs []*blockdev.Mem
	var devs []blockdev.Device
	for i := 0; i < 2; i++ {
		m, _ := blockdev.NewMem(2<<20, 512)
		legs, devs = append(legs, m), append(devs, m)
	}
	sb, err := mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: 16 << 10, Slots: 2, DataIsZero: true})
	if err != nil {
		t.Fatal(err)
	}
	locker := mirror.NewLocalLocker()
	open := func(slot int) (*mirror.Volume, []*blockdev.Faulty) {
		cfg := mirror.FastConfig(slot)
		var paths []*blockdev.Faulty
		for _, m := range legs {
			p := blockdev.NewFaulty(m)
			paths = append(paths, p)
			cfg.Legs = append(cfg.Legs, p)
		}
		cfg.Store, cfg.Locker, cfg.Logger = store, locker, testlog.New(t, fmt.Sprint("node", slot))
		v, err := mirror.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return v, paths
	}
	a, pa := open(0)
	b, _ := open(1)
	pa[1].SetOffline(true)
	if err := a.WriteAt(ctx, make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	tab, ok, err := store.Load(ctx, sb.Volume)
	if err != nil || !ok || tab.Legs[1].State != mirror.LegFailed {
		t.Fatalf("etcd table %+v ok=%v err=%v", tab, ok, err)
	}
	testutil.WaitFor(t, 10*time.Second, "node b to see the failure", func() bool { return b.Table().Legs[1].State == mirror.LegFailed })
	if err := store.CompareAndSwap(ctx, sb.Volume, 1, tab); !errors.Is(err, mirror.ErrConflict) {
		t.Fatalf("stale compare-and-swap: %v", err)
	}
	a.Close()
	b.Close()
	got, err := mirror.ReadSuperblock(ctx, legs[0])
	if err != nil || got.Table.Legs[1].State != mirror.LegFailed || got.Table.Generation != tab.Generation {
		t.Fatalf("superblock copy %+v %v", got.Table, err)
	}
	// The failed leg presented alone is refused as stale: etcd knows
	// better than its superblock.
	cfg := mirror.FastConfig(0)
	cfg.Legs, cfg.Store, cfg.AllowMissingLegs = []blockdev.Device{legs[1]}, store, true
	if _, err := mirror.Open(ctx, cfg); !errors.Is(err, mirror.ErrStaleLeg) && !errors.Is(err, mirror.ErrLastInSyncLeg) {
		t.Fatalf("stale leg: %v", err)
	}
}
