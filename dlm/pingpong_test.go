package dlm

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
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
	eventually(t, 5*time.Second, "uncached releases", func() bool { return nodes[2].n.EtcdWrites() >= 2*rounds })
	checkAll(t, nodes...)
}
