package node_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// recordOf reads the recovery record of name/inc as node by sees it.
func recordOf(by *nodetest.InProcNode, name, inc string) (recovery.Record, bool) {
	n := by.Node()
	recs, err := recovery.List(context.Background(), n.Cluster().Client(), n.Cluster().Config().Prefix())
	if err != nil {
		return recovery.Record{}, false
	}
	for _, r := range recs {
		if r.Victim.Name == name && r.Victim.Incarnation == inc {
			return r, true
		}
	}
	return recovery.Record{}, false
}

// TestCoordinatorMovesWhenItsNodeDies: when the coordinator's node dies,
// a survivor takes the role (within the lease TTL plus a second on an
// idle machine) and recovers the old coordinator through every step.
func TestCoordinatorMovesWhenItsNodeDies(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{})
	var coord *nodetest.InProcNode
	testutil.WaitFor(t, 10*time.Second, "a coordinator", func() bool {
		for _, nd := range c.Nodes {
			if nd.Node().IsCoordinator() {
				coord = nd
				return true
			}
		}
		return false
	})
	inc := incarnation(t, coord)
	var survivors []*nodetest.InProcNode
	for _, nd := range c.Nodes {
		if nd != coord {
			survivors = append(survivors, nd)
		}
	}
	killed := time.Now()
	coord.Kill()
	ttl := survivors[0].Config.LeaseTTL()
	// Within the TTL plus a second on an idle machine; how fast is a figure
	// for make bench-failover, so a loaded machine gets a generous deadline.
	testutil.WaitFor(t, ttl+30*time.Second, "a survivor to take the coordinator role", func() bool {
		for _, nd := range survivors {
			if nd.Node().IsCoordinator() {
				return true
			}
		}
		return false
	})
	took := time.Since(killed)
	t.Logf("coordinator %s killed; the role moved after %s", coord.Name, took.Round(time.Millisecond))
	checkStepsInOrder(t, recovered(t, survivors[0], coord.Name, inc, 20*time.Second))
}

func checkStepsInOrder(t *testing.T, rec recovery.Record) {
	t.Helper()
	var got, want []string
	for _, h := range rec.History {
		got = append(got, h.Step.String())
	}
	for _, s := range recovery.Steps() {
		want = append(want, s.String())
	}
	if len(got) > len(want) || strings.Join(got, ",") != strings.Join(want[:len(got)], ",") || !rec.Done() {
		t.Fatalf("recovery steps %v, want all of %v in order", got, want)
	}
}

// TestFailingFenceAgentHoldsTheLocks: while the fence agent fails, the
// recovery retries and says why, and the dead node's region stays locked;
// once the agent succeeds the recovery goes on and the waiter writes.
func TestFailingFenceAgentHoldsTheLocks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	allow := filepath.Join(dir, "allow")
	calls := filepath.Join(dir, "calls")
	agent := filepath.Join(dir, "fence_test")
	// A fence agent in the fence-agents convention that fails until the
	// test allows it.
	script := fmt.Sprintf("#!/bin/sh\ncat >> %q\necho call >> %q\n[ -e %q ] && exit 0\necho 'power switch unreachable' >&2\nexit 1\n", calls, calls, allow)
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{FileLegs: true, Configure: func(i int, cfg *cluster.Config) {
		cfg.Volume.Fencing, cfg.Volume.FenceAgent = cluster.FenceAgent, agent
	}})
	victim, waiter := c.Node("node2"), c.Node("node3")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var v1, v3 interface {
		WriteAt(context.Context, []byte, int64) error
	}
	testutil.WaitFor(t, 20*time.Second, "volumes open", func() bool {
		a, err1 := victim.Node().Volume()
		b, err2 := waiter.Node().Volume()
		if err1 != nil || err2 != nil {
			return false
		}
		v1, v3 = a, b
		return true
	})
	const off, length = 12 << 20, 64 << 10
	if err := v1.WriteAt(ctx, bytes.Repeat([]byte{0xaa}, length), off); err != nil {
		t.Fatal(err)
	}
	inc := incarnation(t, victim)
	victim.Kill()
	done := make(chan error, 1)
	go func() { done <- v3.WriteAt(ctx, bytes.Repeat([]byte{0xbb}, length), off) }()
	testutil.WaitFor(t, 30*time.Second, "failed fence attempts reported", func() bool {
		rec, ok := recordOf(waiter, victim.Name, inc)
		return ok && rec.Attempts >= 2 && strings.Contains(rec.LastError, "exit") && rec.Finished == recovery.StepNone
	})
	select {
	case err := <-done:
		t.Fatalf("the waiter wrote while the fence kept failing (err %v)", err)
	default:
	}
	b, _ := os.ReadFile(calls)
	if !strings.Contains(string(b), "action=off") || !strings.Contains(string(b), victim.Name) {
		t.Fatalf("the agent was not called with the fence-agents options:\n%s", b)
	}
	os.WriteFile(allow, nil, 0o644)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiter's write after the fence: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiter was not granted after the fence agent succeeded")
	}
	checkStepsInOrder(t, recovered(t, waiter, victim.Name, inc, 20*time.Second))
}
