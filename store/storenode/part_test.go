package storenode_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storenode"
)

// Two real nodes (lock manager, volume, recovery) share the store: what
// one writes the other reads; one dies with a record pending and the
// survivor's recovery hands it over, exactly once.
func TestNodesShareStoreAndReplayTheDead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and two nodes")
	}
	c, a, b := twoStoreNodes(t)
	handled := make(chan string, 8)
	if err := a.MkdirAll("site", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile("site/index.html", []byte("hello from node1"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := b.ReadFile("site/index.html")
	if err != nil || string(got) != "hello from node1" {
		t.Fatalf("node2 read %q, %v", got, err)
	}
	if !storenode.HasRecoveryWriter(nil) {
		t.Skip("sharing checked; the recovery part needs the mirror's RecoveryWriter: a replay through the plain volume waits for the dead node's region locks")
	}
	a.Handle("intent", func(ctx context.Context, tx *store.Tx, rec store.Record) error {
		handled <- string(rec.Payload)
		return tx.WriteFile("site/handled-"+string(rec.Payload), rec.Payload, 0o644)
	})
	err = b.Update(context.Background(), func(tx *store.Tx) error {
		if _, err := tx.Log("intent", []byte("r1")); err != nil {
			return err
		}
		return tx.WriteFile("site/intent", []byte("r1"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Nodes[1].Kill()
	awaitHandled(t, a, handled, "r1")
	if got, _ := a.ReadFile("site/intent"); string(got) != "r1" {
		t.Fatalf("dead node's commit: %q", got)
	}
	select {
	case r := <-handled:
		t.Fatalf("record %q handed over twice", r)
	default:
	}
	rep, err := a.Check(context.Background())
	if err != nil || rep.Err() != nil {
		t.Fatalf("check: %v %v", err, rep.Err())
	}
}

// TestCachedLockBound: a node's MaxCachedLocks reaches its store. With a
// bound of 32, a node that writes 300 files of its own (nobody else asks
// for their locks) gives most of their grants back; with the default
// bound it keeps them all.
func TestCachedLockBound(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and two nodes")
	}
	_, a, b := twoStoreNodesWith(t, func(i int, cfg *storenode.Config) {
		if i == 0 {
			cfg.MaxCachedLocks = 32
		}
	})
	for _, st := range []*store.Store{a, b} {
		dir := fmt.Sprintf("own-%d", st.Slot())
		if err := st.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 300 {
			if err := st.WriteFile(fmt.Sprintf("%s/f%03d", dir, i), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.WaitFor(t, 30*time.Second, "the bounded node to give grants back", func() bool {
		return a.Stats().LockReleases >= 250
	})
	if n := b.Stats().LockReleases; n > 20 {
		t.Fatalf("the node with the default bound gave back %d grants", n)
	}
}

// A survivor writes while the dead node is recovered: its commit writes a
// directory block in place, in a region whose checksum area the dead node
// held (it wrote a neighbouring directory last), and the replay's record
// handler then needs that survivor's journal writer. The survivor's write
// must not wait for the dead node's region locks until the recovery ends
// (they are released once the resync has made the legs agree): with them
// held to the end, the replay waits for the commit and the commit for the
// replay.
func TestSurvivorWritesWhileTheDeadIsReplayed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and two nodes")
	}
	c, a, b := twoStoreNodes(t)
	if !storenode.HasRecoveryWriter(nil) {
		t.Skip("the recovery part needs the mirror's RecoveryWriter")
	}
	// Two directories made together: their blocks share a region.
	for _, d := range []string{"site", "keys"} {
		if err := a.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.WriteFile("site/a0", []byte("a0"), 0o644); err != nil {
		t.Fatal(err)
	}
	handled := make(chan string, 8)
	a.Handle("intent", func(ctx context.Context, tx *store.Tx, rec store.Record) error {
		handled <- string(rec.Payload)
		return tx.WriteFile("site/handled-"+string(rec.Payload), rec.Payload, 0o644)
	})
	// The node to die writes in keys last (its checksum hold of the
	// region stays cached) and leaves a record for the survivor's handler.
	err := b.Update(context.Background(), func(tx *store.Tx) error {
		if _, err := tx.Log("intent", []byte("r1")); err != nil {
			return err
		}
		return tx.WriteFile("keys/k1", []byte("r1"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The node's etcd traffic is cut (it can give nothing back any more)
	// and the survivor writes in site at once: its commit meets the dead
	// node's checksum hold before the recovery has begun.
	c.Nodes[1].Partition()
	wrote := make(chan error, 1)
	go func() { wrote <- a.WriteFile("site/a1", []byte("a1"), 0o644) }()
	c.Nodes[1].Kill()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("survivor's write: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the survivor's write never ended: it waits for the dead node's region locks, and the replay for it")
	}
	awaitHandled(t, a, handled, "r1")
	for name, want := range map[string]string{"keys/k1": "r1", "site/a1": "a1", "site/a0": "a0"} {
		if got, err := a.ReadFile(name); err != nil || string(got) != want {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
	rep, err := a.Check(context.Background())
	if err != nil || rep.Err() != nil {
		t.Fatalf("check: %v %v", err, rep.Err())
	}
}

// twoStoreNodes starts two in-process nodes (file legs) with a store part
// each and returns the cluster and both stores, open.
func twoStoreNodes(t *testing.T) (*nodetest.InProcCluster, *store.Store, *store.Store) {
	return twoStoreNodesWith(t, func(int, *storenode.Config) {})
}

// twoStoreNodesWith is twoStoreNodes with node i's part configured by tune.
func twoStoreNodesWith(t *testing.T, tune func(i int, cfg *storenode.Config)) (*nodetest.InProcCluster, *store.Store, *store.Store) {
	t.Helper()
	c := nodetest.NewInProcCluster(t, 2, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	parts := make([]*storenode.Part, 2)
	for i, nd := range c.Nodes {
		cfg := storenode.Config{Slot: i, Format: true, Logger: testlog.New(t, nd.Name+"-store"),
			Handlers: map[string]store.Handler{}}
		tune(i, &cfg)
		parts[i] = storenode.New(cfg)
		nd.Parts = []node.Part{parts[i]}
		nd.Start()
	}
	c.WaitMembers(30*time.Second, 2, c.Nodes...)
	testutil.WaitFor(t, 30*time.Second, "both stores open", func() bool {
		return parts[0].Store() != nil && parts[1].Store() != nil
	})
	return c, parts[0].Store(), parts[1].Store()
}

// awaitHandled waits for the survivor's recovery to hand record want to
// the handler (which sends it on handled and writes site/handled-WANT).
func awaitHandled(t *testing.T, st *store.Store, handled <-chan string, want string) {
	t.Helper()
	select {
	case r := <-handled:
		if r != want {
			t.Fatalf("handled %q, want %q", r, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the survivor's recovery never handed the record over")
	}
	testutil.WaitFor(t, 30*time.Second, "the handler's file", func() bool {
		_, err := st.Stat("site/handled-" + want)
		return err == nil
	})
}

// TestWholeClusterLeaseLossRecovers: every node loses its lease at once
// (etcd cut off from all of them), each with a record in its journal that
// nobody handled. Every node comes back as a new incarnation whose store
// open finds its own slot held by its own dead incarnation, and the only
// coordinators left are those new incarnations: the recoveries must end,
// every store open, every record handed over exactly once.
func TestWholeClusterLeaseLossRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and two nodes")
	}
	c := nodetest.NewInProcCluster(t, 2, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	parts := make([]*storenode.Part, 2)
	// The handler counts its commits in the store: a transaction may run
	// its function again, but only one run commits.
	handler := func(ctx context.Context, tx *store.Tx, rec store.Record) error {
		name := "site/handled-" + string(rec.Payload)
		b, err := tx.ReadFileForUpdate(name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return tx.WriteFile(name, append(b, '+'), 0o644)
	}
	for i, nd := range c.Nodes {
		parts[i] = storenode.New(storenode.Config{Slot: i, Format: true, Logger: testlog.New(t, nd.Name+"-store"),
			Handlers: map[string]store.Handler{"intent": handler}})
		nd.Parts = []node.Part{parts[i]}
		nd.Start()
	}
	c.WaitMembers(30*time.Second, 2, c.Nodes...)
	testutil.WaitFor(t, 30*time.Second, "both stores open", func() bool {
		return parts[0].Store() != nil && parts[1].Store() != nil
	})
	if err := parts[0].Store().MkdirAll("site", 0o755); err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		payload := fmt.Sprintf("r%d", i)
		err := p.Store().Update(context.Background(), func(tx *store.Tx) error {
			if _, err := tx.Log("intent", []byte(payload)); err != nil {
				return err
			}
			return tx.WriteFile("site/intent-"+payload, []byte(payload), 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	olds := c.LoseEveryLease(30 * time.Second)
	testutil.WaitForNil(t, 90*time.Second, "every recovery done and every store open", func() error {
		for i, p := range parts {
			if p.Store() == nil {
				return fmt.Errorf("store of %s not open; recoveries: %s", c.Nodes[i].Name, recoveryStates(t, c))
			}
		}
		return recoveriesDone(c, olds)
	})
	for _, p := range parts {
		st := p.Store()
		for _, r := range []string{"r0", "r1"} {
			if b, err := st.ReadFile("site/intent-" + r); err != nil || string(b) != r {
				t.Fatalf("site/intent-%s: %q, %v", r, b, err)
			}
			if b, err := st.ReadFile("site/handled-" + r); err != nil || string(b) != "+" {
				t.Fatalf("record %s handed over %d times (%v)", r, len(b), err)
			}
		}
	}
	st := parts[0].Store()
	rep, err := st.Check(context.Background())
	if err != nil || rep.Err() != nil {
		t.Fatalf("check: %v %v", err, rep.Err())
	}
}

// recoveriesDone says which recovery of the incarnations olds is not done.
func recoveriesDone(c *nodetest.InProcCluster, olds []string) error {
	cn := c.Nodes[0].Node().Cluster()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	recs, err := recovery.List(ctx, cn.Client(), cn.Config().Prefix())
	if err != nil {
		return err
	}
	for _, old := range olds {
		found := false
		for _, r := range recs {
			if r.Victim.Incarnation != old {
				continue
			}
			found = true
			if !r.Done() {
				return fmt.Errorf("recovery of %s at %s (%s)", r.Victim, r.Next(), r.LastError)
			}
		}
		if !found {
			return fmt.Errorf("no recovery of %s requested", old)
		}
	}
	return nil
}

func recoveryStates(t *testing.T, c *nodetest.InProcCluster) string {
	t.Helper()
	cn := c.Nodes[0].Node().Cluster()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	recs, err := recovery.List(ctx, cn.Client(), cn.Config().Prefix())
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%s: next %s (%s); ", r.Victim, r.Next(), r.LastError)
	}
	return b.String()
}
