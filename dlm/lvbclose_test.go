package dlm

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestValueBlockSurvivesCleanClose: a node takes EX, writes the value
// block, releases (keeping the lock cached, or not) and closes cleanly;
// another node then reads the value, valid, never an older one. A clean
// close gives every lock up, and the value is written when a node gives a
// lock up.
func TestValueBlockSurvivesCleanClose(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	reader := startTestNode(t, c, 0, "reader")
	for _, cached := range []bool{true, false} {
		for _, pause := range []bool{false, true} {
			name := fmt.Sprintf("cached=%v/pause=%v", cached, pause)
			t.Run(name, func(t *testing.T) {
				res := Named("lvb-close-" + strings.NewReplacer("=", "-", "/", "-").Replace(name))
				// An older value, written and given up by another node.
				old := startTestNodeWith(t, c, 0, "old", func(cfg *Config) { cfg.CacheLocks = false })
				l, err := old.n.Acquire(ctxT(t, 5*time.Second), res, EX)
				if err != nil {
					t.Fatal(err)
				}
				if err := l.SetLVB([]byte("old")); err != nil {
					t.Fatal(err)
				}
				l.Release()
				closeNode(t, old)

				w := startTestNodeWith(t, c, 0, "writer", func(cfg *Config) { cfg.CacheLocks = cached })
				l, err = w.n.Acquire(ctxT(t, 5*time.Second), res, EX)
				if err != nil {
					t.Fatal(err)
				}
				if v, ok := l.LVB(); !ok || !strings.HasPrefix(string(v), "old") {
					t.Fatalf("writer reads %q valid=%v, want the older value", v, ok)
				}
				if err := l.SetLVB([]byte("new")); err != nil {
					t.Fatal(err)
				}
				if err := l.Release(); err != nil {
					t.Fatal(err)
				}
				if pause {
					// The release (or the caching) has settled.
					testutil.WaitFor(t, 5*time.Second, "the writer's lock to settle", func() bool {
						w.n.mu.Lock()
						defer w.n.mu.Unlock()
						for _, nl := range w.n.locks {
							if nl.busy {
								return false
							}
						}
						return true
					})
				}
				closeNode(t, w)

				r, err := reader.n.Acquire(ctxT(t, 10*time.Second), res, PR)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Release()
				v, ok := r.LVB()
				if !ok || strings.TrimRight(string(v), "\x00") != "new" {
					t.Fatalf("after a clean close the reader gets %q valid=%v, want \"new\" valid", strings.TrimRight(string(v), "\x00"), ok)
				}
			})
		}
	}
}

// closeNode closes a test node's lock manager cleanly and leaves.
func closeNode(t *testing.T, x *testNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := x.n.Close(ctx); err != nil {
		t.Fatalf("clean close: %v", err)
	}
	if err := x.m.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
}

// TestValueBlockOfAReleaseCutShortByClose: the release of an uncached
// lock cannot reach etcd, and the node closes meanwhile: Close stops
// retrying it but still writes its value block before it withdraws the
// request, so the next holder reads the value, valid.
func TestValueBlockOfAReleaseCutShortByClose(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	reader := startTestNode(t, c, 0, "reader")
	res := Named("lvb-cut-short")
	old := startTestNodeWith(t, c, 0, "old", func(cfg *Config) { cfg.CacheLocks = false })
	l, err := old.n.Acquire(ctxT(t, 5*time.Second), res, EX)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetLVB([]byte("old")); err != nil {
		t.Fatal(err)
	}
	l.Release()
	closeNode(t, old)

	w := startTestNodeWith(t, c, 0, "writer", func(cfg *Config) { cfg.CacheLocks = false })
	if l, err = w.n.Acquire(ctxT(t, 5*time.Second), res, EX); err != nil {
		t.Fatal(err)
	}
	if err := l.SetLVB([]byte("new")); err != nil {
		t.Fatal(err)
	}
	w.failReleases.Store(true)
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the release to fail", func() bool { return w.failed.Load() > 0 })
	closeNode(t, w)

	r, err := reader.n.Acquire(ctxT(t, 10*time.Second), res, PR)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if v, ok := r.LVB(); !ok || strings.TrimRight(string(v), "\x00") != "new" {
		t.Fatalf("after a release cut short by a clean close the reader gets %q valid=%v, want \"new\" valid", strings.TrimRight(string(v), "\x00"), ok)
	}
}

// TestValueBlockOfADownConversionCutShortByClose: a node writes the value
// block under EX, its user converts down to PR (the node keeps EX), and
// another node asks for PR: the node converts down in the cluster, which
// writes the value block back. That write cannot reach etcd and the node
// closes meanwhile: Close still writes the value block before it
// withdraws the request, so the reader gets the value, valid.
func TestValueBlockOfADownConversionCutShortByClose(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	reader := startTestNode(t, c, 0, "reader")
	res := Named("lvb-down-cut-short")
	old := startTestNodeWith(t, c, 0, "old", func(cfg *Config) { cfg.CacheLocks = false })
	l, err := old.n.Acquire(ctxT(t, 5*time.Second), res, EX)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetLVB([]byte("old")); err != nil {
		t.Fatal(err)
	}
	l.Release()
	closeNode(t, old)

	w := startTestNode(t, c, 0, "writer")
	if l, err = w.n.Acquire(ctxT(t, 5*time.Second), res, EX); err != nil {
		t.Fatal(err)
	}
	if err := l.SetLVB([]byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := l.Convert(ctxT(t, 5*time.Second), PR); err != nil {
		t.Fatal(err)
	}
	w.failDowns.Store(true)
	type got struct {
		v     string
		valid bool
		err   error
	}
	read := make(chan got, 1)
	go func() {
		r, err := reader.n.Acquire(ctxT(t, 20*time.Second), res, PR)
		if err != nil {
			read <- got{err: err}
			return
		}
		defer r.Release()
		v, ok := r.LVB()
		read <- got{v: strings.TrimRight(string(v), "\x00"), valid: ok}
	}()
	testutil.WaitFor(t, 10*time.Second, "the down-conversion to fail", func() bool { return w.failed.Load() > 0 })
	closeNode(t, w)
	r := <-read
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.valid || r.v != "new" {
		t.Fatalf("after a down-conversion cut short by a clean close the reader gets %q valid=%v, want \"new\" valid", r.v, r.valid)
	}
}

// TestZeroValueBlockLeavesNoKey: a holder that writes an all-zero value
// block (what a resource without one reads as) and gives the lock up
// leaves no value-block key in etcd and no entry in any node's table;
// the next holder reads zeros, valid. A non-zero one is kept.
func TestZeroValueBlockLeavesNoKey(t *testing.T) {
	t.Parallel() // its own etcd member, ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	w := startTestNodeWith(t, c, 0, "writer", func(cfg *Config) { cfg.CacheLocks = false })
	r := startTestNode(t, c, 0, "reader")
	res := Named("lvb-zero")
	set := func(v []byte) {
		t.Helper()
		l, err := w.n.Acquire(ctxT(t, 5*time.Second), res, EX)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.SetLVB(v); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(); err != nil {
			t.Fatal(err)
		}
	}
	key := w.n.keys.lvb(res)
	keyCount := func() int64 {
		resp, err := c.Client(0).Get(ctxT(t, 5*time.Second), key, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	set([]byte("gen 7"))
	testutil.WaitFor(t, 5*time.Second, "the value block's key", func() bool { return keyCount() == 1 })
	set(make([]byte, 8))
	testutil.WaitFor(t, 5*time.Second, "the zero value block's key to go", func() bool { return keyCount() == 0 })
	l, err := r.n.Acquire(ctxT(t, 5*time.Second), res, PR)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := l.LVB()
	l.Release()
	if !ok || strings.Trim(string(v), "\x00") != "" {
		t.Fatalf("reader after a zero value block: %q valid=%v, want zeros, valid", v, ok)
	}
	for _, x := range []*testNode{w, r} {
		x.n.mu.Lock()
		_, kept := x.n.rep.Table.lvbs[res.String()]
		x.n.mu.Unlock()
		if kept {
			t.Fatalf("%s's lock table keeps a zero value block of %s", x.n.me, res)
		}
	}
}
