package main

import (
	"bytes"
	"context"
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

// run runs lockctl with args in the test process.
func run(t *testing.T, in io.Reader, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot(&out, in)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
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

// Bad filters are refused at once, with no etcd to talk to.
func TestLockctlRefusesBadFiltersBeforeConnecting(t *testing.T) {
	nowhere := "127.0.0.1:1"
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
		_, err := run(t, strings.NewReader(""), append([]string{"--admin", nowhere, "--endpoints", nowhere}, tc.args...)...)
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
		{"fast profile", write("fast.hcl", "profile = \"fast\"\n"+fmt.Sprintf(ext, "")), 250 * time.Millisecond},
		{"long elections", write("slow.hcl", fmt.Sprintf(ext, "  heartbeat_interval = \"300ms\"\n  election_timeout = \"3s\"\n")), 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &options{election: lease.DefaultElection}
			o.admin.Config = tc.config
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
	// The holder's node must have the blocking callback before the
	// conversion: else the conversion is only local (the node's grant
	// stays EX) and the node converts its grant in the cluster later,
	// after acquire printed the token.
	testutil.WaitFor(t, 10*time.Second, "the holder's blocking callback", func() bool {
		return strings.Contains(out.String(), "blocking: another client waits for foo")
	})
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
