package dlm

import (
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// leaderSignal is a Config.LeaderChanges under the test's control.
type leaderSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newLeaderSignal() *leaderSignal { return &leaderSignal{ch: make(chan struct{})} }

func (s *leaderSignal) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

// change announces a new leader.
func (s *leaderSignal) change() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}

// TestWriteCaughtByLeaderChangeIsSentAgainAtOnce: a lock request is
// never answered (its member forwarded it to a leader that died); when
// the member learns of the new leader the request is sent again at once,
// not after its attempt bound (a minute here). Whether the lost attempt
// had landed or not, the lock works afterwards: the node keeps the
// request's real creation revision, so the cached lock is given up to
// another node when asked (a wrong one would leave the request behind).
func TestWriteCaughtByLeaderChangeIsSentAgainAtOnce(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	other := startTestNode(t, c, 0, "other")
	leader := newLeaderSignal()
	w := startTestNodeWith(t, c, 0, "writer", func(cfg *Config) {
		cfg.WriteAttemptTimeout = time.Minute
		cfg.LeaderChanges = leader.changes
	})
	for _, tc := range []struct {
		name string
		mode int32
	}{{"lost", stallLost}, {"landed", stallLanded}} {
		t.Run(tc.name, func(t *testing.T) {
			res := Named("leader-change-" + tc.name)
			before := w.stalled.Load()
			w.stallCreate.Store(tc.mode)
			got := make(chan error, 1)
			go func() {
				l, err := w.n.Acquire(ctxT(t, 30*time.Second), res, EX)
				if err == nil {
					err = l.SetLVB([]byte(tc.name))
					l.Release()
				}
				got <- err
			}()
			testutil.WaitFor(t, 10*time.Second, "the request to be stalled", func() bool { return w.stalled.Load() > before })
			leader.change()
			select {
			case err := <-got:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the request was not sent again when the leader changed")
			}
			// The writer keeps the lock cached; another node's request
			// makes it give the lock up, value block included.
			r, err := other.n.Acquire(ctxT(t, 10*time.Second), res, PR)
			if err != nil {
				t.Fatalf("another node cannot get the lock the writer cached: %v", err)
			}
			defer r.Release()
			if v, ok := r.LVB(); !ok || string(v[:len(tc.name)]) != tc.name {
				t.Fatalf("value block %q valid=%v, want %q", v, ok, tc.name)
			}
			checkAll(t, w, other)
		})
	}
}

// TestReleaseDeadCaughtByLeaderChangeIsSentAgain: the recovery's release
// of a dead incarnation's locks goes unanswered (lost, or landed with its
// answer lost); once the member knows the new leader it is sent again,
// and the waiter is granted.
func TestReleaseDeadCaughtByLeaderChangeIsSentAgain(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	for _, tc := range []struct {
		name string
		mode int32
	}{{"lost", stallLost}, {"landed", stallLanded}} {
		t.Run(tc.name, func(t *testing.T) {
			leader := newLeaderSignal()
			coord := startTestNodeWith(t, c, 0, "coord-"+tc.name, func(cfg *Config) {
				cfg.WriteAttemptTimeout = time.Minute
				cfg.LeaderChanges = leader.changes
			})
			dead := startTestNode(t, c, 0, "dead-"+tc.name)
			res := Named("release-dead-" + tc.name)
			if _, err := dead.n.Acquire(ctxT(t, 5*time.Second), res, EX); err != nil {
				t.Fatal(err)
			}
			granted := make(chan error, 1)
			go func() {
				l, err := coord.n.Acquire(ctxT(t, 30*time.Second), res, EX)
				if err == nil {
					l.Release()
				}
				granted <- err
			}()
			// The holder dies: its lease goes, its lock is an orphan.
			if _, err := c.Client(0).Revoke(ctxT(t, 5*time.Second), dead.m.LeaseID()); err != nil {
				t.Fatal(err)
			}
			if err := coord.n.WaitDead(ctxT(t, 10*time.Second), dead.n.Owner()); err != nil {
				t.Fatal(err)
			}
			before := coord.stalled.Load()
			coord.stallRelease.Store(tc.mode)
			released := make(chan error, 1)
			go func() { released <- coord.n.ReleaseDead(ctxT(t, 30*time.Second), dead.n.Owner()) }()
			testutil.WaitFor(t, 10*time.Second, "the release to be stalled", func() bool { return coord.stalled.Load() > before })
			leader.change()
			for _, ch := range []chan error{released, granted} {
				select {
				case err := <-ch:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the release was not sent again when the leader changed")
				}
			}
		})
	}
}
