package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/nodetest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// processTestsAtOnce is how many parallel tests run at once unless
// -test.parallel says otherwise: a process test spends its time waiting
// for leases to run out and for recoveries, not on the CPU (four clusters
// at once use under one core), so more than GOMAXPROCS of them fit.
const processTestsAtOnce = 4

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		flag.Set("test.parallel", strconv.Itoa(processTestsAtOnce))
	}
	code := m.Run()
	nodetest.Cleanup()
	os.Exit(code)
}

// testTTL is the lease TTL of the test clusters: the fast profile's
// timing with a 4s lease instead of 2s. The clusters run beside other
// tests on a small machine, where a node's keep-alives ran late by up to
// 1.5s (not a fault under test) and cost survivors their 2s leases; a
// killed or paused node is still seen down within seconds.
const testTTL = 4 * time.Second

var leaderLossRounds = flag.Int("leaderloss.rounds", 1, "how many times TestLeaderLossKeepsOtherLeases kills the etcd leader's node (a campaign: run with -leaderloss.rounds=10)")

// newCluster starts n shoald processes with the test lease (testTTL).
func newCluster(t *testing.T, n int) *nodetest.Cluster {
	t.Helper()
	return nodetest.NewCluster(t, n, nodetest.Options{LeaseTTL: testTTL})
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real shoald processes")
	}
}

// parallel runs a process test alongside the other parallel ones (each
// has its own directories and reserved ports; at most processTestsAtOnce
// of them run at once). Every process test is parallel: other
// packages' tests load the machine anyway, so the clusters keep their
// leases through CPU stalls by their longer lease (testTTL), not by
// running alone, and the bounds the tests assert leave room for a loaded
// machine (how fast is a figure for make bench-failover).
func parallel(t *testing.T) {
	skipShort(t)
	t.Parallel()
}

// seesWithout reports whether every given node is up and no longer lists
// name among its live members.
func seesWithout(name string, nodes ...*nodetest.Node) func() bool {
	return func() bool {
		for _, nd := range nodes {
			m, err := nd.Members()
			if err != nil {
				return false
			}
			if _, ok := m[name]; ok {
				return false
			}
		}
		return true
	}
}

// etcdLeader returns the node whose member leads etcd, as nd sees it.
func etcdLeader(t *testing.T, c *nodetest.Cluster, nd *nodetest.Node) *nodetest.Node {
	t.Helper()
	var leader *nodetest.Node
	c.WaitFor(10*time.Second, "an etcd leader", func() bool {
		st, err := nd.Status()
		if err != nil || st.EtcdLeader == "" {
			return false
		}
		leader = c.Node(st.EtcdLeader)
		return true
	})
	return leader
}

// TestKilledNodeIsSeenDownAndRejoins kills a node that does not host the
// etcd leader: its lease simply runs out. (Killing the leader's host is
// TestLeaderLossKeepsOtherLeases: etcd then extends every lease by one
// election timeout when the new leader takes over.)
func TestKilledNodeIsSeenDownAndRejoins(t *testing.T) {
	parallel(t)
	c := newCluster(t, 3)
	leader := etcdLeader(t, c, c.Nodes[0])
	var victim *nodetest.Node
	var survivors []*nodetest.Node
	for _, nd := range c.Nodes {
		if nd != leader && victim == nil {
			victim = nd
		} else {
			survivors = append(survivors, nd)
		}
	}
	before, err := survivors[0].Members()
	if err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	// Within TTL + 1s on an idle machine; how fast is a figure for make
	// bench-failover, so a loaded machine gets a generous deadline here.
	took := c.WaitFor(testTTL+30*time.Second, "survivors to see "+victim.Name+" down", seesWithout(victim.Name, survivors...))
	t.Logf("SIGKILLed %s seen down by both survivors after %s (lease TTL %s)", victim.Name, took.Round(time.Millisecond), testTTL)
	victim.Start()
	c.WaitMembers(30*time.Second, 3, c.Nodes...)
	after, _ := survivors[0].Members()
	for _, nd := range c.Nodes {
		if nd == victim && after[nd.Name] == before[nd.Name] {
			t.Errorf("restarted %s kept incarnation %s; want a new one", nd.Name, after[nd.Name])
		}
		if nd != victim && after[nd.Name] != before[nd.Name] {
			t.Errorf("survivor %s changed incarnation: before %v after %v", nd.Name, before, after)
		}
	}

	// A clean stop (SIGTERM) is a departure, not a death: the others see
	// the node leave, ask for no recovery, and etcd stays healthy.
	leaving := victim
	if err := leaving.Stop(); err != nil {
		t.Fatalf("SIGTERM: %s did not exit cleanly: %v", leaving.Name, err)
	}
	c.WaitFor(5*time.Second, "the others to see "+leaving.Name+" leave", seesWithout(leaving.Name, survivors...))
	v, err := survivors[0].View()
	if err != nil {
		t.Fatal(err)
	}
	left := false
	for _, ev := range v.Events {
		if ev.Member.Name == leaving.Name && ev.Member.Incarnation == after[leaving.Name] {
			if ev.Kind == cluster.NodeDown {
				t.Fatalf("a clean stop of %s was seen as a death", leaving.Name)
			}
			left = left || ev.Kind == cluster.NodeLeft
		}
	}
	if !left {
		t.Fatalf("no 'left' event for %s: %+v", leaving.Name, v.Events)
	}
	cli := testClient(t, c, survivors[0])
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := cli.Get(ctx, "/shoal/shoal/recovery/"+leaving.Name+"/"+after[leaving.Name]); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("a recovery was requested for a node that left cleanly (%v)", err)
	}
	if _, err := cli.Put(ctx, "/shoal/test/after-leave", "ok"); err != nil {
		t.Fatalf("etcd not healthy after a clean stop: %v", err)
	}
}

// TestPausedNodeRegistersAsNewIncarnation pauses a node that does not host
// the etcd leader (a paused leader's host is the leader-change case).
func TestPausedNodeRegistersAsNewIncarnation(t *testing.T) {
	parallel(t)
	c := newCluster(t, 3)
	leader := etcdLeader(t, c, c.Nodes[0])
	var n2 *nodetest.Node
	var others []*nodetest.Node
	for _, nd := range c.Nodes {
		if nd != leader && n2 == nil {
			n2 = nd
		} else {
			others = append(others, nd)
		}
	}
	n1, n3 := others[0], others[1]
	before, _ := n1.Members()
	n2.Pause()
	paused := true
	defer func() {
		if paused {
			n2.Cont()
		}
	}()
	// Within TTL + 1s on an idle machine (bench-failover measures it).
	took := c.WaitFor(testTTL+30*time.Second, "survivors to see paused "+n2.Name+" down", seesWithout(n2.Name, n1, n3))
	t.Logf("SIGSTOPped %s seen down after %s", n2.Name, took.Round(time.Millisecond))
	n2.Cont()
	paused = false
	c.WaitFor(20*time.Second, n2.Name+" back as a new incarnation", func() bool {
		st, err := n2.Status()
		return err == nil && st.Ready && st.LeaseLosses >= 1 && st.Incarnation != before[n2.Name]
	})
	c.WaitMembers(20*time.Second, 3, n1, n2, n3)
	after, _ := n1.Members()
	if after[n2.Name] == before[n2.Name] {
		t.Fatalf("%s still sees %s's old incarnation %s", n1.Name, n2.Name, before[n2.Name])
	}
	// The woken node must have given up its old incarnation before it
	// registered the new one.
	log := n2.Log()
	lost := strings.Index(log, "lease lost: no longer acting as a member")
	reg := strings.LastIndex(log, "registered: node="+n2.Name+" incarnation="+after[n2.Name])
	if lost < 0 || reg < 0 || lost > reg {
		t.Errorf("%s's log does not show the lost lease before the new registration (lost at %d, registered at %d)", n2.Name, lost, reg)
	}
}

// TestLeaderLossKeepsOtherLeases kills the node that hosts the etcd
// leader: the survivors keep their leases and incarnations through the
// leader change, and see the dead node down. With -leaderloss.rounds=N
// the leader's node is killed and restarted N times on one cluster.
func TestLeaderLossKeepsOtherLeases(t *testing.T) {
	parallel(t)
	c := newCluster(t, 3)
	for round := 0; round < *leaderLossRounds; round++ {
		leader := etcdLeader(t, c, c.Running()[0])
		var others []*nodetest.Node
		incs := map[string]string{}
		losses := map[string]int{}
		for _, nd := range c.Running() {
			if nd == leader {
				continue
			}
			others = append(others, nd)
			st, err := nd.Status()
			if err != nil {
				t.Fatal(err)
			}
			incs[nd.Name], losses[nd.Name] = st.Incarnation, st.LeaseLosses
		}
		leader.Kill()
		killed := time.Now()
		newLeader := ""
		var seenDown time.Duration
		// Watch the survivors for two lease TTLs: no lost lease, no new
		// incarnation, a new etcd leader, and the old leader's node down.
		// A survivor whose renewals the leader change cut off would have
		// stopped trusting its lease within one TTL of the kill.
		for time.Since(killed) < 2*testTTL {
			if seenDown == 0 && seesWithout(leader.Name, others...)() {
				seenDown = time.Since(killed)
			}
			for _, nd := range others {
				st, err := nd.Status()
				if err != nil {
					continue // the admin API may be slow while etcd elects
				}
				if st.LeaseLosses != losses[nd.Name] || (st.Incarnation != "" && st.Incarnation != incs[nd.Name]) {
					t.Fatalf("round %d: %s lost its lease when etcd leader %s died (incarnation %s -> %s, losses %d -> %d)",
						round, nd.Name, leader.Name, incs[nd.Name], st.Incarnation, losses[nd.Name], st.LeaseLosses)
				}
				if st.EtcdLeader != "" && st.EtcdLeader != leader.Name && newLeader == "" {
					newLeader = st.EtcdLeader
					t.Logf("round %d: etcd leader %s killed; %s leads after %s", round, leader.Name, newLeader, time.Since(killed).Round(time.Millisecond))
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if newLeader == "" {
			t.Fatalf("round %d: no new etcd leader after %s", round, 2*testTTL)
		}
		// The dead node must be seen down: on an idle machine within
		// TTL + election + the new leader's extension of every lease by
		// one election timeout + 1s (about 5.5 s with testTTL and the fast
		// profile's 250 ms election); how fast is a figure for
		// make bench-failover, so here a loaded machine gets 30 s.
		if seenDown == 0 {
			c.WaitFor(30*time.Second, leader.Name+" seen down by the survivors", seesWithout(leader.Name, others...))
			seenDown = time.Since(killed)
		}
		t.Logf("round %d: the old leader's node %s seen down after %s", round, leader.Name, seenDown.Round(time.Millisecond))
		leader.Start()
		c.WaitMembers(30*time.Second, 3, c.Nodes...)
	}
}

func TestFourthNodeJoinsAndLeaves(t *testing.T) {
	parallel(t)
	c := newCluster(t, 3)
	n4 := c.AddNode("node4")
	n4.Start()
	c.WaitMembers(30*time.Second, 4, c.Nodes...)
	cli := testClient(t, c, c.Nodes[0])
	if n := etcdMembers(t, cli); n != 4 {
		t.Fatalf("etcd has %d members after join, want 4", n)
	}
	out, err := runShoald(t, append([]string{"leave", "--admin", n4.AdminAddr}, c.AdminArgs()...)...)
	if err != nil {
		t.Fatalf("shoald leave: %v\n%s", err, out)
	}
	if err := n4.Wait(20 * time.Second); err != nil {
		t.Fatalf("node4 did not exit cleanly after leave: %v\n%s", err, n4.Log())
	}
	c.WaitMembers(10*time.Second, 3, c.Nodes[:3]...)
	c.WaitFor(10*time.Second, "etcd to have 3 members", func() bool { return etcdMembers(t, cli) == 3 })
	if !strings.Contains(n4.Log(), "left the cluster") {
		t.Errorf("node4's log does not say it left")
	}
	t.Logf("shoald leave:\n%s", out)
	// shoald leave followed the node to the end, step by step, and the
	// member's files are gone.
	for _, step := range []string{"lease revoked", "etcd member", "exited", "has left the cluster"} {
		if !strings.Contains(out, step) {
			t.Errorf("shoald leave did not report %q:\n%s", step, out)
		}
	}
	for _, f := range []string{"etcd", "certs", "shoal-node.json", ".lock"} {
		if _, err := os.Stat(filepath.Join(n4.DataDir, f)); !os.IsNotExist(err) {
			t.Errorf("node4 kept %s after leaving: %v", f, err)
		}
	}
}

// TestSoloNodeRefusesUncertifiedClientsAndItsLeave: one node serves both
// checks: etcd refuses clients without a certificate from the cluster's
// CA, and the last member of a cluster refuses to leave.
func TestSoloNodeRefusesUncertifiedClientsAndItsLeave(t *testing.T) {
	parallel(t)
	c := newCluster(t, 1)
	ep := "https://" + c.Nodes[0].ClientAddr
	// Trusts the CA but presents no certificate.
	noCert, err := cluster.ClientTLS(cluster.CertFiles{CA: filepath.Join(c.PKI, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: noCert, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err = cli.Get(ctx, "/shoal/"); err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
	t.Logf("client without certificate refused: %v", err)
	// A certificate from another CA is refused too.
	other := t.TempDir()
	if err := cluster.EnsureLocalCA(other); err != nil {
		t.Fatal(err)
	}
	files, err := cluster.IssueCert(other, other, "intruder", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	files.CA = filepath.Join(c.PKI, "ca.pem")
	foreign, err := cluster.ClientTLS(files)
	if err != nil {
		t.Fatal(err)
	}
	cli2, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: foreign, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		defer cli2.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err = cli2.Get(ctx, "/shoal/"); err == nil {
			t.Fatal("a client with a foreign certificate was served")
		}
	}
	// And the node's own certificate works, so the refusals are real.
	ok := testClient(t, c, c.Nodes[0])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := ok.Get(ctx, "/shoal/"); err != nil {
		t.Fatalf("client with a valid certificate refused: %v", err)
	}
	// The last member of a cluster refuses to leave.
	out, err := runShoald(t, append([]string{"leave", "--admin", c.Nodes[0].AdminAddr}, c.AdminArgs()...)...)
	if err == nil || !strings.Contains(out, "only etcd member") {
		t.Fatalf("leave of the only member: err %v, output %q", err, out)
	}
}

// testClient returns an etcd client with a certificate from the cluster's
// CA, talking to nd.
func testClient(t *testing.T, c *nodetest.Cluster, nd *nodetest.Node) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	files, err := cluster.IssueCert(c.PKI, dir, "test-client", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := cluster.ClientTLS(files)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + nd.ClientAddr}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func etcdMembers(t *testing.T, cli *clientv3.Client) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return -1
	}
	return len(resp.Members)
}
