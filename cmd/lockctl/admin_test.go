package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// adminRig is two in-process nodes, an etcd client for extra lock-manager
// members (owners other than the nodes) and certificates of the cluster's
// CA: an admin one and a read-only one.
type adminRig struct {
	c         *nodetest.InProcCluster
	prefix    string
	etcd      *clientv3.Client
	admin, ro cluster.CertFiles
}

func newAdminRig(t *testing.T) *adminRig {
	t.Helper()
	c := nodetest.NewInProcCluster(t, 2, nodetest.InProcOptions{})
	dir := t.TempDir()
	admin, err := cluster.IssueCert(c.Etcd.PKI, filepath.Join(dir, "admin"), "lockctl-test", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := cluster.IssueClientCert(c.Etcd.PKI, filepath.Join(dir, "ro"), "watcher", []string{"read-only"})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := cluster.ClientTLS(admin)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Etcd.Endpoint}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &adminRig{c: c, prefix: c.Nodes[0].Config.Prefix(), etcd: cli, admin: admin, ro: ro}
}

// creds are the flags showing certificate files f.
func creds(f cluster.CertFiles) []string {
	return []string{"--cacert", f.CA, "--cert", f.Cert, "--key", f.Key}
}

// lockctl runs lockctl against the admin APIs at admins with the admin
// certificate.
func (r *adminRig) lockctl(t *testing.T, admins string, args ...string) (string, error) {
	t.Helper()
	return run(t, strings.NewReader(""), append(append([]string{"--admin", admins}, creds(r.admin)...), args...)...)
}

// member joins the lock manager as a client member called name.
func (r *adminRig) member(t *testing.T, name string, grace time.Duration) (*dlm.LeaseMember, *dlm.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: r.etcd, Prefix: r.prefix, Name: name, TTL: 3 * time.Second, Margin: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix, cfg.CacheLocks = r.etcd, m, r.prefix, false
	if grace > 0 {
		cfg.DeadlockGrace = grace
	}
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ccancel()
		n.Close(cctx)
		m.Leave(cctx)
	})
	return m, n
}

// Every lockctl command that reads or changes the running cluster goes
// through a node's admin API: ls (bounded, with its filters), show,
// graph (naming the deadlock victim), recoveries, force-release (admin
// role only), watch (which carries on through another node when its node
// stops), acquire (through etcd) seen by watch, and a first node that is
// down.
func TestLockctlThroughAdminAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nodes and an etcd member")
	}
	r := newAdminRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n1, n2 := r.c.Nodes[0], r.c.Nodes[1]
	url1, url2 := n1.AdminURL(), n2.AdminURL()
	d1, err := n1.Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d1.Acquire(ctx, dlm.Region("vol", 0, 100), dlm.EX); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "node2 to see node1's lock", func() bool {
		out, err := r.lockctl(t, url2, "ls")
		return err == nil && strings.Contains(out, "vol@0-100") && strings.Contains(out, "held")
	})

	t.Run("filters", func(t *testing.T) {
		out, err := r.lockctl(t, url1, "ls", "--json", "--volume", "vol", "--range", "50-60")
		var locks []dlm.LockInfo
		if err != nil || json.Unmarshal([]byte(out), &locks) != nil || len(locks) != 1 || locks[0].Granted != dlm.EX {
			t.Fatalf("ls --json: %v\n%s", err, out)
		}
		out, err = r.lockctl(t, url1, "ls", "--json", "--volume", "vol", "--range", "100-200")
		if err != nil || strings.TrimSpace(out) != "[]" {
			t.Fatalf("ls outside the range: %v\n%s", err, out)
		}
		if out, err = r.lockctl(t, url1, "show", "vol@10-20"); err != nil || !strings.Contains(out, "EX") {
			t.Fatalf("show: %v\n%s", err, out)
		}
		if out, err = r.lockctl(t, url1, "show", "never-locked"); err == nil || !strings.Contains(err.Error(), "unknown resource") {
			t.Fatalf("show of an unknown resource: %v\n%s", err, out)
		}
		if out, err = r.lockctl(t, url1, "recoveries"); err != nil || !strings.Contains(out, "NODE") {
			t.Fatalf("recoveries: %v\n%s", err, out)
		}
	})

	t.Run("bounded listing", func(t *testing.T) {
		_, bulk := r.member(t, "bulk", 0)
		for i := range defaultLimit + 10 {
			if _, err := bulk.Acquire(ctx, dlm.Named(fmt.Sprintf("bulk-%03d", i)), dlm.PR); err != nil {
				t.Fatal(err)
			}
		}
		var out string
		testutil.WaitFor(t, 10*time.Second, "node1 to see the bulk locks", func() bool {
			out, err = r.lockctl(t, url1, "ls", "--limit", "0")
			return err == nil && strings.Count(out, "bulk-") == defaultLimit+10
		})
		out, err := r.lockctl(t, url1, "ls")
		if err != nil {
			t.Fatal(err)
		}
		if rows := strings.Count(out, "\nbulk-0"); rows > defaultLimit {
			t.Errorf("ls without --limit lists %d rows, want at most %d:\n%s", rows, defaultLimit, out)
		}
		for _, want := range []string{fmt.Sprintf("%d of ", defaultLimit), "matching requests shown", "bulk/", "bulk-  ", "--resource-prefix", "--node", "--limit 0"} {
			if !strings.Contains(out, want) {
				t.Errorf("ls of %d locks does not say %q:\n%s", defaultLimit+11, want, out)
			}
		}
		if out, err = r.lockctl(t, url1, "ls", "--node", "node1"); err != nil || strings.Contains(out, "bulk-") || strings.Contains(out, "shown") {
			t.Errorf("ls --node node1: %v\n%s", err, out)
		}
	})

	t.Run("graph names the victim", func(t *testing.T) {
		var nodes []*dlm.Node
		var locks []*dlm.Lock
		for _, name := range []string{"dl1", "dl2"} {
			_, n := r.member(t, name, time.Minute)
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
		testutil.WaitFor(t, 10*time.Second, "graph to name the victim", func() bool {
			out, err := r.lockctl(t, url2, "graph")
			return err == nil && strings.Contains(out, "CYCLE") && strings.Contains(out, "VICTIM") && strings.Contains(out, victim)
		})
	})

	t.Run("force-release", func(t *testing.T) {
		m, gone := r.member(t, "gone", 0)
		if _, err := gone.Acquire(ctx, dlm.Named("left-behind"), dlm.EX); err != nil {
			t.Fatal(err)
		}
		var id string
		for _, l := range gone.Locks() {
			if l.Owner.Node == "gone" {
				id = l.ID
			}
		}
		testutil.WaitFor(t, 10*time.Second, "node1 to see the lock", func() bool {
			out, err := r.lockctl(t, url1, "ls", "--resource-prefix", "left-behind")
			return err == nil && strings.Contains(out, id)
		})
		if _, err := r.lockctl(t, url1, "force-release", id, "--yes"); err == nil || !strings.Contains(err.Error(), "live member") {
			t.Fatalf("force-release of a live owner's lock: %v", err)
		}
		// The owner is gone from the membership but its lease, and so its
		// request, stays: the cluster's recovery waits at the fence step
		// for the lease to end and cannot release the lock, which is
		// when an operator force-releases it.
		kctx, kcancel := context.WithCancel(ctx)
		defer kcancel()
		ka, err := r.etcd.KeepAlive(kctx, m.LeaseID())
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range ka {
			}
		}()
		m.Stop()
		if _, err := r.etcd.Delete(ctx, keys.Of(r.prefix).Member("gone")); err != nil {
			t.Fatal(err)
		}
		if out, err := r.lockctl(t, url1, "force-release", id); err == nil || !strings.Contains(out, "type yes") {
			t.Fatalf("force-release without confirmation: %v\n%s", err, out)
		}
		// A read-only certificate may look but not release.
		ro := append(append([]string{"--admin", url1}, creds(r.ro)...), "force-release", id, "--yes")
		if _, err := run(t, strings.NewReader(""), ro...); err == nil || !strings.Contains(err.Error(), "403") {
			t.Fatalf("force-release with a read-only certificate: %v", err)
		}
		if out, err := run(t, strings.NewReader(""), append(append([]string{"--admin", url1}, creds(r.ro)...), "ls", "--resource-prefix", "left-behind")...); err != nil || !strings.Contains(out, id) {
			t.Fatalf("ls with a read-only certificate: %v\n%s", err, out)
		}
		// No credentials at all: refused, saying what to give.
		if _, err := run(t, strings.NewReader(""), "--admin", url1, "--cacert", r.admin.CA, "ls"); err == nil || !strings.Contains(err.Error(), "--config") {
			t.Fatalf("ls without credentials: %v", err)
		}
		if out, err := r.lockctl(t, url1, "force-release", id, "--yes"); err != nil {
			t.Fatalf("force-release of a dead owner's lock: %v\n%s", err, out)
		}
		if out, err := r.lockctl(t, url1, "ls", "--resource-prefix", "left-behind"); err != nil || strings.Contains(out, id) {
			t.Fatalf("ls after force-release: %v\n%s", err, out)
		}
		resp, err := r.etcd.Get(ctx, r.prefix+"/dlm/forced/", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), "lockctl@") {
			t.Fatalf("force-release record: %v %v", resp, err)
		}
	})

	t.Run("config file", func(t *testing.T) {
		cfg := n1.Config
		path := filepath.Join(t.TempDir(), "node.hcl")
		hcl := fmt.Sprintf("node_name = %q\ndata_dir = %q\ncluster_name = %q\nadmin {\n  addr = %q\n}\ntls {\n  ca_file = %q\n  cert_file = %q\n  key_file = %q\n}\netcd {\n  mode = \"external\"\n  endpoints = [%q]\n}\n",
			cfg.NodeName, cfg.DataDir, cfg.ClusterName, n1.Node().AdminAddr(), cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile, r.c.Etcd.Endpoint)
		if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, strings.NewReader(""), "--config", path, "ls", "--volume", "vol")
		if err != nil || !strings.Contains(out, "vol@0-100") {
			t.Fatalf("ls --config: %v\n%s", err, out)
		}
		if _, err := run(t, strings.NewReader(""), "--config", filepath.Join(t.TempDir(), "missing.hcl"), "ls"); err == nil {
			t.Fatal("missing config file accepted")
		}
	})

	t.Run("watch and acquire", func(t *testing.T) {
		var wout, werr syncBuffer
		watch := newRoot(&wout, strings.NewReader(""))
		watch.SetErr(&werr)
		watch.SetArgs(append(append([]string{"--admin", url2}, creds(r.admin)...), "watch"))
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		wdone := make(chan error, 1)
		go func() { wdone <- watch.ExecuteContext(wctx) }()
		testutil.WaitFor(t, 10*time.Second, "the watch to start", func() bool { return strings.Contains(wout.String(), "# watching") })

		// acquire is a lock-manager member of its own, through etcd.
		var out syncBuffer
		acq := newRoot(&out, strings.NewReader("convert PR\nrelease\n"))
		acq.SetArgs(append(append([]string{"--endpoints", r.c.Etcd.Endpoint, "--prefix", r.prefix, "--election-timeout", "500ms"}, creds(r.admin)...), "acquire", "foo", "EX", "--name", "tester"))
		if err := acq.ExecuteContext(ctx); err != nil {
			t.Fatalf("acquire: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "granted foo EX") || !strings.Contains(out.String(), "converted to PR") {
			t.Fatalf("acquire output:\n%s", out.String())
		}
		testutil.WaitForNil(t, 10*time.Second, "the grant and release in the watch output", func() error {
			s := wout.String()
			if strings.Contains(s, " grant ") && strings.Contains(s, "tester/") && strings.Contains(s, "release "+r.prefix+"/dlm/req/tester/") {
				return nil
			}
			return fmt.Errorf("watch output:\n%s", s)
		})

		// node2 stops: the watch follows through node1, which it learned
		// from node2's member list.
		if err := n2.Stop(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 20*time.Second, "the watch to follow through node1", func() bool {
			return strings.Count(wout.String(), "# watching") == 2 && strings.Contains(wout.String(), url1)
		})
		if !strings.Contains(werr.String(), "following through another node") {
			t.Errorf("the watch did not say it changed nodes:\n%s", werr.String())
		}
		if _, err := d1.Acquire(ctx, dlm.Named("after-switch"), dlm.EX); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "a grant after the switch", func() bool { return strings.Contains(wout.String(), "after-switch") })
		wcancel()
		if err := <-wdone; err != nil {
			t.Fatalf("watch: %v", err)
		}

		// A one-shot command whose first node is down asks the next.
		if out, err := r.lockctl(t, url2+","+url1, "ls", "--volume", "vol"); err != nil || !strings.Contains(out, "vol@0-100") {
			t.Fatalf("ls with the first node down: %v\n%s", err, out)
		}
	})
}
