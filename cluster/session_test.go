package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/internal/testlog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type renewReply struct {
	ttl int64
	err error
}

// leaseRig drives a session's keep-alive loop on a fake clock; every
// renewal the loop sends waits for the test to answer it.
type leaseRig struct {
	t     *testing.T
	clk   *clock.Fake
	s     *Session
	calls chan chan renewReply
}

// reactWithin bounds how long the session's goroutine may take to react to
// a step of the fake clock: a deadline for what must happen, generous for a
// loaded machine under the race detector.
const reactWithin = 10 * time.Second

func newLeaseRig(t *testing.T) *leaseRig {
	r := &leaseRig{t: t, clk: clock.NewFake(time.Unix(1000, 0)), calls: make(chan chan renewReply)}
	r.s = newSession(SessionConfig{
		Info: keys.MemberRecord{Name: "n1", Kind: keys.KindNode, Incarnation: "i1", Lease: 7},
		TTL:  2 * time.Second, KeepAliveInterval: 250 * time.Millisecond,
		KeepAliveTimeout: 500 * time.Millisecond, SelfFenceMargin: 250 * time.Millisecond,
		Clock: r.clk, Logger: testlog.New(t, "lease"),
	})
	r.s.info = r.s.cfg.Info
	r.s.renew = func(ctx context.Context, id clientv3.LeaseID) (int64, error) {
		reply := make(chan renewReply)
		r.calls <- reply
		rep := <-reply
		return rep.ttl, rep.err
	}
	r.s.deadline.renewed(r.clk.Now(), 2*time.Second) // as granted at start
	go r.s.keepAlive()
	t.Cleanup(func() {
		select {
		case <-r.s.stop:
		default:
			close(r.s.stop)
		}
		<-r.s.done
	})
	// The loop has made its ticker and guard timer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.clk.BlockUntilContext(ctx, 2); err != nil {
		t.Fatalf("keep-alive loop did not start: %v", err)
	}
	return r
}

// step advances the clock and answers the renewal it triggers with rep;
// it reports false when the loop declared the lease lost instead.
func (r *leaseRig) step(d time.Duration, rep renewReply) bool {
	r.t.Helper()
	r.clk.Advance(d)
	select {
	case reply := <-r.calls:
		reply <- rep
		return true
	case <-r.s.Lost():
		return false
	case <-time.After(reactWithin):
		r.t.Fatalf("no renewal and no loss after advancing to %s", r.clk.Now())
		return false
	}
}

func TestLeaseStaysTrustedWhileRenewed(t *testing.T) {
	r := newLeaseRig(t)
	for i := 0; i < 40; i++ {
		if !r.step(250*time.Millisecond, renewReply{ttl: 2}) {
			t.Fatalf("lease lost after %d good renewals: %v", i, r.s.Err())
		}
	}
	// Wait until the last confirmation is applied, then check the deadline
	// is counted from the send time of the last renewal.
	want := r.clk.Now().Add(2*time.Second - 250*time.Millisecond)
	for end := time.Now().Add(2 * time.Second); !r.s.Deadline().Equal(want); {
		if time.Now().After(end) {
			t.Fatalf("deadline %s, want %s", r.s.Deadline(), want)
		}
	}
	if !r.s.Valid() {
		t.Fatal("lease not valid after good renewals")
	}
}

func TestLeaseLostAtDeadlineWhenRenewalsFail(t *testing.T) {
	r := newLeaseRig(t)
	start := r.clk.Now()
	steps := 0
	for r.step(250*time.Millisecond, renewReply{err: errors.New("etcd unreachable")}) {
		steps++
		if steps > 20 {
			t.Fatal("lease never declared lost")
		}
	}
	lostAt := r.clk.Now().Sub(start)
	if lostAt != 1750*time.Millisecond {
		t.Fatalf("lease declared lost %s after the last confirmed renewal, want TTL - margin = 1.75s", lostAt)
	}
	if !errors.Is(r.s.Err(), ErrLeaseLost) || r.s.Valid() {
		t.Fatalf("err %v valid %v", r.s.Err(), r.s.Valid())
	}
}

func TestPausedNodeDoesNotRenewPastDeadline(t *testing.T) {
	r := newLeaseRig(t)
	if !r.step(250*time.Millisecond, renewReply{ttl: 2}) {
		t.Fatal("first renewal failed")
	}
	// The process is stopped for five seconds and then continues: every
	// timer is due at once. The loop must see the deadline passed and send
	// no renewal that could revive trust in the lease.
	r.clk.Advance(5 * time.Second)
	select {
	case <-r.s.Lost():
	case reply := <-r.calls:
		reply <- renewReply{ttl: 2}
		t.Fatal("a renewal was sent after the self-fence deadline")
	case <-time.After(reactWithin):
		t.Fatal("lease not declared lost after the pause")
	}
	if !errors.Is(r.s.Err(), ErrLeaseLost) {
		t.Fatalf("err %v", r.s.Err())
	}
}

func TestLeaseLostWhenEtcdForgetsIt(t *testing.T) {
	r := newLeaseRig(t)
	r.step(250*time.Millisecond, renewReply{err: rpctypes.ErrLeaseNotFound})
	select {
	case <-r.s.Lost():
	case <-time.After(reactWithin):
		t.Fatal("lease not lost after etcd said it does not know it")
	}
	if r.clk.Now().Sub(time.Unix(1000, 0)) != 250*time.Millisecond {
		t.Fatal("loss should be immediate")
	}
}

func TestLateConfirmationDoesNotRevive(t *testing.T) {
	var d leaseDeadline
	d.margin = 250 * time.Millisecond
	t0 := time.Unix(0, 0)
	d.renewed(t0, 2*time.Second)
	d.renewed(t0.Add(-time.Second), 2*time.Second) // an older renewal confirmed late
	if !d.deadline.Equal(t0.Add(1750 * time.Millisecond)) {
		t.Fatalf("deadline moved backwards: %s", d.deadline)
	}
	if d.valid(t0.Add(1750*time.Millisecond)) || !d.valid(t0.Add(1749*time.Millisecond)) {
		t.Fatal("valid must end exactly at the deadline")
	}
}

// A new incarnation that takes its name over from an older one says which
// (Session.Replaced): the older one's member key vanished at the takeover,
// perhaps before any member view held it, and its recovery is the new
// one's to ask for.
func TestTakeOverNamesTheReplacedIncarnation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	register := func(afterRevoke func()) *Session {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := Register(ctx, SessionConfig{Client: c.Client(0), Prefix: "/takeover",
			Info: keys.MemberRecord{Name: "n1", Kind: keys.KindNode},
			TTL:  5 * time.Second, KeepAliveInterval: time.Second, KeepAliveTimeout: 2 * time.Second, SelfFenceMargin: time.Second,
			TakeOver: true, Logger: testlog.New(t, "lease"), afterRevoke: afterRevoke})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := register(nil)
	if old := first.Replaced(); len(old) != 0 {
		t.Fatalf("first incarnation replaced %+v, want none", old)
	}
	second := register(nil)
	old := second.Replaced()
	if len(old) != 1 || old[0].Name != "n1" || old[0].Incarnation != first.Incarnation() || old[0].Lease != int64(first.LeaseID()) {
		t.Fatalf("second incarnation replaced %+v, want n1/%s with lease %x", old, first.Incarnation(), first.LeaseID())
	}
	first.Abandon(errors.New("taken over"))

	// Another incarnation registers between the takeover's revoke and its
	// next try: the takeover names both it replaced, oldest first.
	ctx := context.Background()
	racer := keys.MemberRecord{Name: "n1", Kind: keys.KindNode, Incarnation: "racer"}
	lease, err := c.Client(0).Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	racer.Lease = int64(lease.ID)
	val, _ := json.Marshal(racer)
	raced := false
	third := register(func() {
		if raced {
			return
		}
		raced = true
		if _, err := c.Client(0).Put(ctx, keys.Of("/takeover").Member("n1"), string(val), clientv3.WithLease(lease.ID)); err != nil {
			t.Error(err)
		}
	})
	defer third.Close(context.Background(), true)
	old = third.Replaced()
	if len(old) != 2 || old[0].Incarnation != second.Incarnation() || old[1].Incarnation != "racer" || old[1].Lease != racer.Lease {
		t.Fatalf("third incarnation replaced %+v, want %s then racer", old, second.Incarnation())
	}
	second.Abandon(errors.New("taken over"))
}
