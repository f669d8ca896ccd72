package dlm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/etcdtest"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestPingPongExclusion has two nodes take turns on one EX lock (and a
// third node take it uncached) and checks that no two holders ever
// overlap, that tokens strictly increase, and that uncached use goes to
// etcd every time.
func TestPingPongExclusion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	c := etcdtest.NewCluster(t, 3)
	nodes := []*testNode{startTestNode(t, c, 0, "a"), startTestNode(t, c, 1, "b"), startTestNode(t, c, 2, "u")}
	nodes[2].n.mu.Lock()
	nodes[2].n.cfg.CacheLocks = false
	nodes[2].n.mu.Unlock()
	var inside atomic.Int32
	var mu sync.Mutex
	var last Token
	var wg sync.WaitGroup
	const rounds = 40
	for i, x := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				l, err := x.n.Acquire(ctxT(t, 20*time.Second), Named("pp"), EX)
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) != 1 {
					t.Errorf("node %d: two EX holders at once", i)
				}
				mu.Lock()
				if l.Token() < last {
					t.Errorf("token %s below %s", l.Token(), last)
				}
				last = l.Token()
				mu.Unlock()
				if err := l.Use(); err != nil {
					t.Error(err)
				}
				inside.Add(-1)
				l.Release()
			}
		}()
	}
	wg.Wait()
	// The uncached node wrote a request and a release for each round.
	testutil.WaitFor(t, 5*time.Second, "uncached releases", func() bool { return nodes[2].n.EtcdWrites() >= 2*rounds })
	checkAll(t, nodes...)
}

// TestEvictionAndCleanClose: idle cached locks beyond MaxCached are given
// back, and a closed node leaves no request behind, even with writes in
// flight when it closes.
func TestEvictionAndCleanClose(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	a := startTestNodeWith(t, c, 0, "a", func(cfg *Config) { cfg.MaxCached = 4 })
	ctx := ctxT(t, 20*time.Second)
	for i := range 12 {
		l, err := a.n.Acquire(ctx, Named(fmt.Sprintf("e%d", i)), PR)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	testutil.WaitFor(t, 10*time.Second, "eviction down to MaxCached", func() bool {
		n := 0
		for _, l := range a.n.Locks() {
			if l.Owner == a.n.Owner() {
				n++
			}
		}
		return n <= 5
	})
	// Close while request writes are in flight (held back on their way).
	a.delay.Store(int64(300 * time.Millisecond))
	for i := range 8 {
		go func() {
			l, err := a.n.Acquire(ctx, Named(fmt.Sprintf("c%d", i)), EX)
			if err == nil {
				l.Release()
			}
		}()
	}
	testutil.WaitFor(t, 5*time.Second, "a request write in flight", func() bool {
		a.n.mu.Lock()
		defer a.n.mu.Unlock()
		for _, nl := range a.n.locks {
			if nl.busy {
				return true
			}
		}
		return false
	})
	if err := a.n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Client(0).Get(ctx, testPrefix+"/dlm/req/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("%d requests left behind by a closed node", resp.Count)
	}
}

// TestEvictionCountsOnlyIdleLocks: locks a node holds for its local users
// do not count against MaxCached. With more held than MaxCached, the idle
// ones (up to the limit) stay cached and their reuse asks etcd nothing;
// idle ones beyond it are still given back, the oldest first.
func TestEvictionCountsOnlyIdleLocks(t *testing.T) {
	t.Parallel() // its own etcd member, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	const maxCached = 4
	a := startTestNodeWith(t, c, 0, "a", func(cfg *Config) { cfg.MaxCached = maxCached })
	ctx := ctxT(t, 20*time.Second)
	// Each grant reaches its user through the watch, often before its
	// write's answer, which EtcdWrites counts: Settle waits for it, so
	// that the count below sees only the writes of the reuse.
	for i := range 3 * maxCached {
		l, err := a.n.Acquire(ctx, Named(fmt.Sprintf("held%d", i)), PR)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Settle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	idle := func(i int) Resource { return Named(fmt.Sprintf("idle%d", i)) }
	for i := range maxCached {
		l, err := a.n.Acquire(ctx, idle(i), PR)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Settle(ctx); err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	writes := a.n.EtcdWrites()
	for i := range maxCached {
		l, err := a.n.Acquire(ctx, idle(i), PR)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	if got := a.n.EtcdWrites() - writes; got != 0 {
		t.Fatalf("reusing %d idle cached locks beside %d held ones took %d etcd writes, want 0", maxCached, 3*maxCached, got)
	}
	// Two more idle ones: the two oldest idle ones go, the held ones stay.
	for i := maxCached; i < maxCached+2; i++ {
		l, err := a.n.Acquire(ctx, idle(i), PR)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	owned := func(name string) bool {
		_, ok := ownRequest(a.n, Named(name))
		return ok
	}
	testutil.WaitFor(t, 10*time.Second, "the two oldest idle locks given back", func() bool {
		return !owned("idle0") && !owned("idle1")
	})
	for _, name := range []string{"idle2", "idle3", "idle4", "idle5", "held0", fmt.Sprintf("held%d", 3*maxCached-1)} {
		if !owned(name) {
			t.Errorf("%s was given back; want it kept", name)
		}
	}
}
