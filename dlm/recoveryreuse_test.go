package dlm

import (
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
)

// TestRecoveryLockAgainAfterRelease: a node recovers two dead slots at
// once over dead holders' orphaned region locks (two recovery users of
// one region on one node, the second queued behind the first), while a
// plain request of the same node waits behind the orphans and so calls
// the recovery grant back. The recovery grant is never cached: once the
// first user releases it, it must be given back and asked for anew for
// the second. It was kept instead, for the second user "queued before
// the callback", which a spent grant may not serve: both waited until
// their deadline (a whole-cluster lease loss stalled on it: the new
// incarnations' volume opens and the coordinator's resync waited for one
// region for 20 s).
func TestRecoveryLockAgainAfterRelease(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	a := startTestNode(t, c, 0, "a")
	b := startTestNode(t, c, 0, "b")
	coord := startTestNode(t, c, 0, "coord")
	res := Region("vol", 5<<20, 6<<20)
	// Both dead nodes held the region shared (ordered writers' holds).
	for _, x := range []*testNode{a, b} {
		if _, err := x.n.Acquire(ctxT(t, 10*time.Second), res, PR); err != nil {
			t.Fatal(err)
		}
	}
	plain := make(chan error, 1)
	go func() {
		l, err := coord.n.Acquire(ctxT(t, 60*time.Second), res, EX)
		if err == nil {
			l.Release()
		}
		plain <- err
	}()
	a.m.Stop() // their leases run out: their grants become orphans
	b.m.Stop()
	for _, x := range []*testNode{a, b} {
		if err := coord.n.WaitDead(ctxT(t, 20*time.Second), x.n.Owner()); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 10 {
		// Two recovery users at once (the recoveries of two dead slots
		// over one region), then the release of b's region locks while
		// one of them waits.
		got := make(chan error, 2)
		for range 2 {
			go func() {
				l, err := coord.n.Acquire(ctxT(t, 10*time.Second), res, EX, Recovery())
				if err == nil {
					time.Sleep(20 * time.Millisecond)
					l.Release()
				}
				got <- err
			}()
		}
		if round == 0 {
			if _, err := coord.n.ReleaseDeadRegions(ctxT(t, 10*time.Second), b.n.Owner(), "vol"); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 {
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("round %d: recovery grant: %v\n%s", round, err, formatLocks(coord.n.Locks()))
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: a recovery user never got the lock\n%s", round, formatLocks(coord.n.Locks()))
			}
		}
	}
	if err := coord.n.ReleaseDead(ctxT(t, 10*time.Second), a.n.Owner()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-plain:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the plain request was not granted after the orphan's release")
	}
}
