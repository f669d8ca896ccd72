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
