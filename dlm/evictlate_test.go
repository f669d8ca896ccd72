package dlm

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestLockIdleOnlyWhenItsWriteAnswersIsEvicted: a new lock's grant
// reaches its user through the watch before its write's answer, so a user
// that releases at once leaves a lock that is still busy, idle only once
// the answer comes. It then counts against MaxCached like any idle lock:
// the oldest idle one is given back.
func TestLockIdleOnlyWhenItsWriteAnswersIsEvicted(t *testing.T) {
	t.Parallel() // its own etcd member, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	const maxCached = 2
	a := startTestNodeWith(t, c, 0, "a", func(cfg *Config) { cfg.MaxCached = maxCached })
	ctx := ctxT(t, 20*time.Second)
	idle := func(i int) Resource { return Named(fmt.Sprintf("late-idle%d", i)) }
	for i := range maxCached {
		l, err := a.n.Acquire(ctx, idle(i), PR)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	a.answerDelay.Store(int64(500 * time.Millisecond))
	l, err := a.n.Acquire(ctx, idle(maxCached), PR)
	if err != nil {
		t.Fatal(err)
	}
	a.answerDelay.Store(0)
	a.n.mu.Lock()
	busy := l.nl.busy
	a.n.mu.Unlock()
	l.Release()
	if !busy {
		t.Fatal("the grant waited for its write's answer: this test no longer sets up a lock released while busy")
	}
	testutil.WaitFor(t, 10*time.Second, "the oldest idle lock given back", func() bool {
		_, held := ownRequest(a.n, idle(0))
		return !held
	})
}

// TestEvictionReleasesInBatches: the idle locks evict trims at once go
// to etcd in few transactions, not one each, and are gone from the lock
// table: another node takes them without a blocking callback to this one.
func TestEvictionReleasesInBatches(t *testing.T) {
	t.Parallel() // its own etcd member, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	const maxCached, locks = 160, 400
	a := startTestNodeWith(t, c, 0, "a", func(cfg *Config) { cfg.MaxCached = maxCached })
	b := startTestNode(t, c, 0, "b")
	ctx := ctxT(t, 60*time.Second)
	res := func(i int) Resource { return Named(fmt.Sprintf("batch%d", i)) }
	w0 := a.n.EtcdWrites()
	for i := range locks {
		l, err := a.n.Acquire(ctx, res(i), EX)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(); err != nil {
			t.Fatal(err)
		}
	}
	keep := maxCached - maxCached/16
	testutil.WaitFor(t, 10*time.Second, "the idle locks past MaxCached given back", func() bool {
		return a.n.Stats().CachedLocks <= maxCached
	})
	// One write per new lock, and the releases of each trim (about
	// maxCached/16 locks) in one each: one at a time they would be
	// locks-keep writes more.
	released := locks - a.n.Stats().CachedLocks
	got, most := a.n.EtcdWrites()-w0, uint64(locks+released/4)
	t.Logf("%d etcd writes for %d new locks and %d released", got, locks, released)
	if got > most {
		t.Fatalf("%d etcd writes for %d new locks and %d released, want at most %d", got, locks, released, most)
	}
	if released < locks-keep-maxCached/16 {
		t.Fatalf("%d of %d locks released, with MaxCached %d", released, locks, maxCached)
	}
	for i := range 20 {
		l, err := b.n.Acquire(ctx, res(i), EX)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	if bc := a.n.Stats().BlockingCallbacks; bc != 0 {
		t.Fatalf("node a had %d blocking callbacks for locks it released", bc)
	}
}
