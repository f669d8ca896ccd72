package tgtdtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"go.etcd.io/etcd/client/v3/concurrency"
)

const iqn = "iqn.2026-01.io.shoal:fence"

// node is one node's connections to every leg.
type node struct {
	ref    fencing.NodeRef
	devs   []*iscsi.Device
	fencer *fencing.ReservationFencer
}

func openNode(t *testing.T, legs []*tgtrig.Target, ref fencing.NodeRef) *node {
	t.Helper()
	n := &node{ref: ref}
	var fl []fencing.Leg
	for i, tg := range legs {
		cfg, err := iscsi.ConfigFromURL(tg.URL(1))
		if err != nil {
			t.Fatal(err)
		}
		cfg.InitiatorName = "iqn.2026-01.io.shoal:" + ref.Name
		cfg.Logger = testlog.New(t, ref.Name+"-iscsi")
		cfg.CommandTimeout = 20 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		d, err := iscsi.Open(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("%s opens leg %d: %v", ref.Name, i, err)
		}
		t.Cleanup(func() { _ = d.Close() })
		n.devs = append(n.devs, d)
		fl = append(fl, fencing.Leg{Name: fmt.Sprintf("leg%d", i), Dev: d})
	}
	f, err := fencing.NewReservationFencer(fencing.ReservationConfig{
		Self: ref, Legs: func() []fencing.Leg { return fl }, Logger: testlog.New(t, ref.Name),
	})
	if err != nil {
		t.Fatal(err)
	}
	n.fencer = f
	return n
}

func startLegs(t *testing.T, n int) []*tgtrig.Target {
	t.Helper()
	rig := tgtrig.StartT(t, tgtrig.Config{})
	var legs []*tgtrig.Target
	for i := range n {
		tg := rig.MustAddTarget(t, fmt.Sprintf("%s:leg%d", iqn, i))
		tg.MustAddLUN(t, 1, 8<<20)
		legs = append(legs, tg)
	}
	return legs
}

func block(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }

// TestPausedWriterIsFencedOnTgtd: a node stopped in the middle of its
// writes is fenced, another node writes the region, and when the first
// wakes up none of its late writes reaches either leg: tgtd answers
// reservation conflict (PREEMPT AND ABORT is missing there, so the fencer
// falls back to PREEMPT). A new incarnation of the node rejoins.
func TestPausedWriterIsFencedOnTgtd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	legs := startLegs(t, 2)
	survivor := openNode(t, legs, fencing.NewNodeRef("n0", "1", 0))
	paused := openNode(t, legs, fencing.NewNodeRef("n1", "1", 0))
	for _, n := range []*node{survivor, paused} {
		if err := n.fencer.Join(ctx); err != nil {
			t.Fatalf("%s joins: %v", n.ref, err)
		}
	}
	for i, d := range paused.devs {
		if err := d.WriteAt(ctx, block('a'), 0); err != nil {
			t.Fatalf("write before the fence, leg %d: %v", i, err)
		}
	}

	start := time.Now()
	if err := survivor.fencer.Fence(ctx, paused.ref); err != nil {
		t.Fatalf("fence: %v", err)
	}
	t.Logf("fenced on %d tgtd legs in %v", len(legs), time.Since(start))
	for i, d := range survivor.devs {
		keys, _, err := d.ReadKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(keys, paused.ref.Key) || !slices.Contains(keys, survivor.ref.Key) {
			t.Fatalf("leg %d keys after fence: %x", i, keys)
		}
		if err := d.WriteAt(ctx, block('b'), 0); err != nil {
			t.Fatalf("survivor writes leg %d: %v", i, err)
		}
	}
	// The paused node wakes and carries on writing.
	for i, d := range paused.devs {
		if err := d.WriteAt(ctx, block('x'), 0); !errors.Is(err, blockdev.ErrReservationConflict) {
			t.Fatalf("late write to leg %d = %v, want reservation conflict", i, err)
		}
	}
	if err := paused.fencer.CheckSelf(ctx); !errors.Is(err, fencing.ErrFenced) {
		t.Fatalf("fenced node's CheckSelf = %v", err)
	}
	got := make([]byte, 4096)
	for i, d := range survivor.devs {
		if err := d.ReadAt(ctx, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, block('b')) {
			t.Fatalf("leg %d holds %q..., want the survivor's data", i, got[:8])
		}
	}
	// Fencing again is a no-op.
	if err := survivor.fencer.Fence(ctx, paused.ref); err != nil {
		t.Fatalf("second fence: %v", err)
	}
	// The node comes back as a new incarnation with a new key.
	back := openNode(t, legs, fencing.NewNodeRef("n1", "2", 0))
	if err := back.fencer.Join(ctx); err != nil {
		t.Fatal(err)
	}
	for i, d := range back.devs {
		if err := d.WriteAt(ctx, block('c'), 4096); err != nil {
			t.Fatalf("rejoined write to leg %d: %v", i, err)
		}
	}
}

// TestRecoveryOrderOnTgtdAndEtcd runs the coordinator against tgtd legs
// and an embedded etcd: when the locks are released the victim's key is
// gone from every leg and its lease is revoked, and each step is recorded.
func TestRecoveryOrderOnTgtdAndEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	legs := startLegs(t, 2)
	dir, err := os.MkdirTemp("", "fence-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cluster, err := etcdtest.Start(dir, 1, etcdtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cli := cluster.NewClient(t)

	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	victim := openNode(t, legs, fencing.NewNodeRef("n1", "1", int64(lease.ID)))
	coordNode := openNode(t, legs, fencing.NewNodeRef("n0", "1", 0))
	for _, n := range []*node{coordNode, victim} {
		if err := n.fencer.Join(ctx); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	var steps []string
	check := func(step string) error {
		for i, d := range coordNode.devs {
			keys, _, err := d.ReadKeys(ctx)
			if err != nil {
				return err
			}
			if slices.Contains(keys, victim.ref.Key) {
				return fmt.Errorf("%s while the victim is still registered on leg %d", step, i)
			}
		}
		if r, err := cli.TimeToLive(ctx, lease.ID); err != nil || r.TTL > 0 {
			return fmt.Errorf("%s while the victim's lease lives (ttl %d, %v)", step, r.TTL, err)
		}
		mu.Lock()
		steps = append(steps, step)
		mu.Unlock()
		return nil
	}
	hooks := recovery.HookFuncs{
		Replay:  func(context.Context, fencing.NodeRef) error { return check("replay-journal") },
		Resync:  func(context.Context, fencing.NodeRef) error { return check("resync") },
		Release: func(context.Context, fencing.NodeRef) error { return check("release-locks") },
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	cfg := recovery.DefaultConfig()
	cfg.Name = coordNode.ref.String()
	cfg.Fencer = coordNode.fencer
	cfg.Hooks = hooks
	cfg.Backoff = fencing.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}
	cfg.Logger = testlog.New(t, "coordinator")
	coord, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: cli, Lease: recovery.SessionLease(sess), Prefix: "/shoal", Self: coordNode.ref, Engine: cfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- coord.Run(runCtx) }()
	defer func() { stop(); <-done }()

	start := time.Now()
	if _, err := coord.Request(ctx, victim.ref); err != nil {
		t.Fatal(err)
	}
	var rec recovery.Record
	testutil.WaitForNil(t, 60*time.Second, "the recovery to finish", func() error {
		recs, err := recovery.List(ctx, cli, "/shoal")
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || !recs[0].Done() {
			return fmt.Errorf("recovery not done: %+v", recs)
		}
		rec = recs[0]
		return nil
	})
	t.Logf("request to recovery done: %v", time.Since(start))
	var order []string
	for _, h := range rec.History {
		order = append(order, h.Step.String())
	}
	if want := []string{"fence", "record-fence", "resync", "replay-journal", "release-locks", "done"}; !slices.Equal(order, want) {
		t.Fatalf("recorded steps %v, want %v", order, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(steps, []string{"resync", "replay-journal", "release-locks"}) {
		t.Fatalf("hooks ran %v", steps)
	}
	for i, d := range victim.devs {
		if err := d.WriteAt(ctx, block('x'), 0); !errors.Is(err, blockdev.ErrReservationConflict) {
			t.Fatalf("victim write to leg %d after recovery = %v", i, err)
		}
	}
}
