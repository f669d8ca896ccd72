package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/lease"
	"github.com/shoal-ha/shoal/internal/testutil"
)

func lockctl(t *testing.T, eps []string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot(&out, strings.NewReader(""))
	root.SetArgs(append([]string{"--endpoints", strings.Join(eps, ","), "--prefix", "/lc"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestLockctl(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: c.Client(0), Prefix: "/lc", Name: "n1", TTL: 2 * time.Second, Margin: 200 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix = c.Client(0), m, "/lc"
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if _, err := n.Acquire(ctx, dlm.Region("vol", 0, 100), dlm.EX); err != nil {
		t.Fatal(err)
	}
	out, err := lockctl(t, c.Endpoints, "ls")
	if err != nil || !strings.Contains(out, "vol@0-100") || !strings.Contains(out, "held") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, err = lockctl(t, c.Endpoints, "ls", "--json", "--volume", "vol", "--range", "50-60")
	var locks []dlm.LockInfo
	if err != nil || json.Unmarshal([]byte(out), &locks) != nil || len(locks) != 1 || locks[0].Granted != dlm.EX {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	out, err = lockctl(t, c.Endpoints, "ls", "--json", "--volume", "vol", "--range", "100-200")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls outside the range: %v\n%s", err, out)
	}
	if out, err = lockctl(t, c.Endpoints, "show", "vol@10-20"); err != nil || !strings.Contains(out, "EX") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if out, err = lockctl(t, c.Endpoints, "graph"); err != nil || !strings.Contains(out, "no waiters") {
		t.Fatalf("graph: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"show", "vol@9-3"}, {"show", "never-locked"}, {"acquire", "foo", "XX"}, {"ls", "--range", "1-2"}, {"ls", "--volume", "v", "--range", "5"}, {"force-release", "/lc/dlm/req/none/x/1", "--yes"}} {
		if _, err := lockctl(t, c.Endpoints, bad...); err == nil {
			t.Errorf("lockctl %v succeeded", bad)
		}
	}
	// A lock whose owner is alive cannot be forced away.
	id := n.Locks()[0].ID
	if _, err := lockctl(t, c.Endpoints, "force-release", id, "--yes"); err == nil || !strings.Contains(err.Error(), "live member") {
		t.Fatalf("force-release of a live owner's lock: %v", err)
	}
	// Once the owner is gone it can, with a record left in etcd.
	m.Stop()
	if _, err := c.Client(0).Revoke(ctx, m.LeaseID()); err != nil {
		t.Fatal(err)
	}
	if out, err := lockctl(t, c.Endpoints, "force-release", id); err == nil || !strings.Contains(out, "type yes") {
		t.Fatalf("force-release without confirmation: %v\n%s", err, out)
	}
	if out, err := lockctl(t, c.Endpoints, "force-release", id, "--yes"); err != nil {
		t.Fatalf("force-release of a dead owner's lock: %v\n%s", err, out)
	}
	if out, err := lockctl(t, c.Endpoints, "ls"); err != nil || strings.Contains(out, "vol@0-100") {
		t.Fatalf("ls after force-release: %v\n%s", err, out)
	}
	resp, err := c.Client(0).Get(ctx, "/lc/dlm/forced/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), "lockctl@") {
		t.Fatalf("force-release record: %v %v", resp, err)
	}
}

func TestLockctlAcquireAndWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	eps := strings.Join(c.Endpoints, ",")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wout syncBuffer
	watch := newRoot(&wout, strings.NewReader(""))
	watch.SetArgs([]string{"--endpoints", eps, "--prefix", "/lc", "watch"})
	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- watch.ExecuteContext(wctx) }()
	testutil.WaitFor(t, 10*time.Second, "the watch to start", func() bool { return strings.Contains(wout.String(), "# watching") })

	var out bytes.Buffer
	acq := newRoot(&out, strings.NewReader("convert PR\nrelease\n"))
	acq.SetArgs([]string{"--endpoints", eps, "--prefix", "/lc", "acquire", "foo", "EX", "--name", "tester"})
	if err := acq.ExecuteContext(ctx); err != nil {
		t.Fatalf("acquire: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "granted foo EX") || !strings.Contains(out.String(), "converted to PR") {
		t.Fatalf("acquire output:\n%s", out.String())
	}
	testutil.WaitFor(t, 10*time.Second, "the release in the watch output", func() bool {
		return strings.Contains(wout.String(), "release /lc/dlm/req/tester/")
	})
	wcancel()
	<-wdone
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLockctlReadsNodeConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A lock taken under the prefix of cluster "lc2".
	m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: c.Client(0), Prefix: "/shoal/lc2", Name: "n1", TTL: 2 * time.Second, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix = c.Client(0), m, "/shoal/lc2"
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if _, err := n.Acquire(ctx, dlm.Named("cfg-lock"), dlm.PW); err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/node.hcl"
	hcl := "node_name = \"n1\"\ncluster_name = \"lc2\"\netcd {\n  mode = \"external\"\n  endpoints = [\"" + c.Endpoints[0] + "\"]\n}\n"
	if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	root := newRoot(&out, strings.NewReader(""))
	root.SetArgs([]string{"--config", path, "ls"})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "cfg-lock") {
		t.Fatalf("ls --config: %v\n%s", err, out.String())
	}
	root = newRoot(&out, strings.NewReader(""))
	root.SetArgs([]string{"--config", t.TempDir() + "/missing.hcl", "ls"})
	if err := root.Execute(); err == nil {
		t.Fatal("missing config file accepted")
	}
}

// Bad filters are refused at once, with no etcd to talk to.
func TestLockctlRefusesBadFiltersBeforeConnecting(t *testing.T) {
	nowhere := []string{"127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ls", "--volume", "v", "--range", "9-3"}, "bad --range"},
		{[]string{"ls", "--range", "1-3"}, "--range needs --volume"},
		{[]string{"show", "v@10-5"}, "end must exceed start"},
		{[]string{"acquire", "r", "XX"}, "bad lock mode"},
	} {
		start := time.Now()
		_, err := lockctl(t, nowhere, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%v: took %s: the bad input was not refused before connecting", tc.args, d)
		}
	}
}

// lockctl's lease follows the rule the nodes' configuration follows, from
// the same code, for the cluster's election timeout.
func TestLockctlLeaseFollowsTheNodeRule(t *testing.T) {
	cli := &clientv3.Client{} // Validate only needs one to be set
	old := dlm.LeaseMemberConfig{Client: cli, Name: "old", TTL: 5 * time.Second, Margin: time.Second,
		KeepAlive: 1250 * time.Millisecond, KeepAliveTimeout: 2500 * time.Millisecond, ElectionTimeout: time.Second}
	if err := old.Validate(); !errors.Is(err, lease.ErrTiming) {
		t.Fatalf("lockctl's old lease (TTL 5s, renewals every TTL/4 bounded by TTL/2) passes the rule: %v", err)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ext := "node_name = \"n1\"\ndata_dir = \"/var/lib/shoal\"\ncluster_name = \"c\"\netcd {\n  mode = \"external\"\n  endpoints = [\"https://127.0.0.1:2379\"]\n%s}\n"
	for _, tc := range []struct {
		name, config string
		election     time.Duration
	}{
		{"no config", "", lease.DefaultElection},
		{"fast profile", write("fast.hcl", "profile = \"fast\"\n"+fmt.Sprintf(ext, "")), 500 * time.Millisecond},
		{"long elections", write("slow.hcl", fmt.Sprintf(ext, "  heartbeat_interval = \"300ms\"\n  election_timeout = \"3s\"\n")), 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &options{config: tc.config, election: lease.DefaultElection}
			if err := o.applyConfig(&cobra.Command{}); err != nil {
				t.Fatal(err)
			}
			if o.election != tc.election {
				t.Fatalf("election timeout %v, want %v", o.election, tc.election)
			}
			lc := o.leaseConfig(cli, "lockctl-test")
			if err := lc.Validate(); err != nil {
				t.Fatalf("lockctl's lease %+v: %v", lc, err)
			}
			if ride := lease.RideOut(lc.KeepAlive, lc.KeepAliveTimeout, tc.election, lc.Margin); lc.TTL < ride {
				t.Fatalf("TTL %v below the ride-out %v", lc.TTL, ride)
			}
		})
	}
}

// After "convert PR" down from EX while another client waits, acquire
// prints the token the conversion was granted with: the one the lock
// table (and so ls and watch) shows.
func TestLockctlPrintsTheConversionsToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: c.Client(0), Prefix: "/lc", Name: "waiter", TTL: 2 * time.Second, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix = c.Client(0), m, "/lc"
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)

	var out syncBuffer
	in, feed := io.Pipe()
	defer feed.Close()
	acq := newRoot(&out, in)
	acq.SetArgs([]string{"--endpoints", strings.Join(c.Endpoints, ","), "--prefix", "/lc", "acquire", "foo", "EX", "--name", "holder"})
	done := make(chan error, 1)
	go func() { done <- acq.ExecuteContext(ctx) }()
	testutil.WaitFor(t, 10*time.Second, "lockctl's grant", func() bool { return strings.Contains(out.String(), "granted foo EX") })

	got := make(chan error, 1)
	go func() {
		l, err := n.Acquire(ctx, dlm.Named("foo"), dlm.PR)
		if err == nil {
			l.Release()
		}
		got <- err
	}()
	testutil.WaitFor(t, 10*time.Second, "the other client to queue", func() bool { return len(n.WaitFor()) > 0 })
	if _, err := io.WriteString(feed, "convert PR\n"); err != nil {
		t.Fatal(err)
	}
	var printed string
	testutil.WaitFor(t, 10*time.Second, "the conversion to be printed", func() bool {
		_, after, ok := strings.Cut(out.String(), "converted to PR token=")
		printed, _, _ = strings.Cut(after, "\n")
		return ok && strings.HasSuffix(after, "\n")
	})
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	var inTable string
	for _, l := range n.Locks() {
		if l.Owner.Node == "holder" && l.Held {
			inTable = l.Token.String()
		}
	}
	if printed != inTable {
		t.Fatalf("acquire printed token %s after the conversion; the lock table holds %s\n%s", printed, inTable, out.String())
	}
	if _, err := io.WriteString(feed, "release\n"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("acquire: %v\n%s", err, out.String())
	}
}

// graph names the deadlock victim the nodes chose.
func TestLockctlGraphNamesTheVictim(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nodes []*dlm.Node
	var locks []*dlm.Lock
	for _, name := range []string{"n1", "n2"} {
		m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: c.Client(0), Prefix: "/lc", Name: name, TTL: 2 * time.Second, ElectionTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Leave(context.Background())
		cfg := dlm.DefaultConfig()
		cfg.Client, cfg.Member, cfg.Prefix, cfg.DeadlockGrace = c.Client(0), m, "/lc", time.Minute
		n, err := dlm.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(context.Background())
		l, err := n.Acquire(ctx, dlm.Named("dl"), dlm.PR)
		if err != nil {
			t.Fatal(err)
		}
		nodes, locks = append(nodes, n), append(locks, l)
	}
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	for _, l := range locks {
		go func() { _ = l.Convert(cctx, dlm.EX, dlm.FailOnDeadlock()) }()
	}
	testutil.WaitFor(t, 10*time.Second, "a victim", func() bool { return len(nodes[0].DeadlockVictims()) == 1 })
	victim := nodes[0].DeadlockVictims()[0]
	out, err := lockctl(t, c.Endpoints, "graph")
	if err != nil || !strings.Contains(out, "CYCLE") || !strings.Contains(out, "VICTIM") || !strings.Contains(out, victim) {
		t.Fatalf("graph does not name victim %s: %v\n%s", victim, err, out)
	}
}

// After etcd compacts past the newest checkpoint, ls asks the live nodes
// for one and lists at once; with no node to answer, the error names the
// compaction (not a lost lease).
func TestLockctlLsAfterCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: c.Client(0), Prefix: "/lc", Name: "n1", TTL: 2 * time.Second, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix, cfg.CheckpointInterval = c.Client(0), m, "/lc", time.Hour
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Acquire(ctx, dlm.Named("compacted-lock"), dlm.EX); err != nil {
		t.Fatal(err)
	}
	compact := func() {
		t.Helper()
		resp, err := c.Client(0).Get(ctx, "any")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client(0).Compact(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	compact()
	start := time.Now()
	out, err := lockctl(t, c.Endpoints, "ls", "--timeout", "5s")
	if err != nil || !strings.Contains(out, "compacted-lock") {
		t.Fatalf("ls after compaction: %v\n%s", err, out)
	}
	t.Logf("ls after compaction took %v", time.Since(start))

	// More history after the checkpoint that ls asked for; then the node
	// stops without withdrawing its requests (as a crash would): nobody is
	// left to write a checkpoint.
	if _, err := n.Acquire(ctx, dlm.Named("later-lock"), dlm.EX); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	stop, scancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer scancel()
	<-stop.Done()
	cerr := n.Close(stop) // the context is over: the request stays in etcd
	compact()
	out, err = lockctl(t, c.Endpoints, "ls", "--timeout", "1s")
	if !errors.Is(err, dlm.ErrCompacted) || !strings.Contains(err.Error(), "compacted") || strings.Contains(err.Error(), "lease lost") {
		t.Fatalf("ls with nobody to answer: %v, want an error naming the compaction\n%s\nclose: %v", err, out, cerr)
	}
}
