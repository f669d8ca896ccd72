package dlm

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// Nodes that keep an idle PR cached and then all want EX must not deadlock:
// a cached grant that no local user holds is given up when a local waiter
// needs more, instead of being converted in place (every node converting
// its idle PR up would wait for the others' PR forever, as in the store
// when three nodes make directories under one parent at once).
func TestCachedReadersAllWantExclusive(t *testing.T) {
	t.Parallel() // its own etcd member, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	nodes := []*testNode{startTestNode(t, c, 0, "a"), startTestNode(t, c, 0, "b"), startTestNode(t, c, 0, "c")}

	// exclusiveAll has every node ask for EX on res at once and hold it
	// briefly; each must get it within the deadline.
	exclusiveAll := func(t *testing.T, res Resource, before func(x *testNode)) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, len(nodes))
		for _, x := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				before(x)
				l, err := x.n.Acquire(ctxT(t, 15*time.Second), res, EX)
				if err != nil {
					errs <- fmt.Errorf("%s: EX on %s: %w", x.m.Name(), res, err)
					return
				}
				if err := l.Use(); err != nil {
					errs <- err
				}
				l.Release()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}

	t.Run("IdleCachedPR", func(t *testing.T) {
		for i := range 4 {
			res := Named(fmt.Sprintf("idle-pr-%d", i))
			for _, x := range nodes {
				l, err := x.n.Acquire(ctxT(t, 5*time.Second), res, PR)
				if err != nil {
					t.Fatal(err)
				}
				l.Release() // cached, idle
			}
			exclusiveAll(t, res, func(*testNode) {})
		}
		checkAll(t, nodes...)
	})

	t.Run("ReaderLeavesWhileEXQueued", func(t *testing.T) {
		// A local reader holds PR while another local user asks for EX;
		// the reader then leaves: the idle PR left behind must not hold up
		// the other nodes. A node that asks before another node's EX
		// reached it converts its PR up; one that asks after that blocking
		// callback does not (its conversion and the other's would each
		// wait for the other's PR): its EX waits locally for the reader,
		// and the node then gives its PR up and queues anew. Which one a
		// node does depends on timing, so in the last rounds the last
		// node asks only once it has been called back.
		for i := range 4 {
			res := Named(fmt.Sprintf("reader-leaves-%d", i))
			readers := map[*testNode]*Lock{}
			for _, x := range nodes {
				l, err := x.n.Acquire(ctxT(t, 5*time.Second), res, PR)
				if err != nil {
					t.Fatal(err)
				}
				readers[x] = l
			}
			late := nodes[len(nodes)-1]
			var mu sync.Mutex
			converted := 0
			exclusiveAll(t, res, func(x *testNode) {
				mu.Lock()
				r := readers[x]
				mu.Unlock()
				if i >= 2 && x == late {
					if err := testutil.Poll(10*time.Second, func() bool { return calledBack(x.n, res) }); err != nil {
						t.Errorf("%s: never called back: %v", x.m.Name(), err)
					}
				}
				go func() {
					// Once this node's EX is queued (converting up in the
					// table, or locally behind a blocking callback), the
					// reader leaves.
					var up bool
					err := testutil.Poll(10*time.Second, func() bool {
						up = convertingUp(x.n, res)
						return up || queued(x.n, res)
					})
					if err != nil {
						t.Errorf("%s: the EX request was never queued: %v", x.m.Name(), err)
					}
					if up {
						mu.Lock()
						converted++
						mu.Unlock()
					}
					r.Release()
				}()
			})
			// The first node to ask is called back by nobody: it converts.
			mu.Lock()
			if converted == 0 {
				t.Errorf("round %d: no node converted its PR up while its reader held it", i)
			}
			mu.Unlock()
		}
		checkAll(t, nodes...)
	})
}

// calledBack reports whether n's request on res got a blocking callback.
func calledBack(n *Node, res Resource) bool {
	l, ok := ownRequest(n, res)
	return ok && l.Blocking
}

// convertingUp reports whether n's request on res, holding PR, asks the
// cluster for EX.
func convertingUp(n *Node, res Resource) bool {
	l, ok := ownRequest(n, res)
	return ok && l.Held && l.Granted == PR && l.Want == EX
}
