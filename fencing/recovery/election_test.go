package recovery_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"
)

// nodeLease is a membership lease as a node keeps it: renewed one request
// at a time, never by a keep-alive stream. Pause stops the renewals (the
// node is stopped); Wake then reports the lease lost, as a node that wakes
// past its self-fence deadline does.
type nodeLease struct {
	id     clientv3.LeaseID
	lost   chan struct{}
	paused atomic.Bool
	once   sync.Once
}

func newNodeLease(t *testing.T, cli *clientv3.Client, ttl int64) *nodeLease {
	t.Helper()
	g, err := cli.Grant(context.Background(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	l := &nodeLease{id: g.ID, lost: make(chan struct{})}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if l.paused.Load() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := cli.KeepAliveOnce(ctx, l.id)
			cancel()
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				l.Wake()
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done; l.Wake() })
	return l
}

func (l *nodeLease) LeaseID() clientv3.LeaseID { return l.id }
func (l *nodeLease) Lost() <-chan struct{}     { return l.lost }
func (l *nodeLease) Pause()                    { l.paused.Store(true) }
func (l *nodeLease) Wake()                     { l.once.Do(func() { close(l.lost) }) }

// coordinatorKeys lists the election keys' values in creation order.
func coordinatorKeys(t *testing.T, cli *clientv3.Client, prefix string) []string {
	t.Helper()
	resp, err := cli.Get(context.Background(), keys.Of(prefix).Coordinator()+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, kv := range resp.Kvs {
		vals = append(vals, string(kv.Value))
	}
	return vals
}

// stallKeepAlives is a gRPC interceptor that holds back every answer on
// the lease keep-alive streams while stalled is set, as an etcd leader
// election does for the streams it interrupts.
func stallKeepAlives(stalled *atomic.Bool, received *atomic.Int64) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || !strings.HasSuffix(method, "/LeaseKeepAlive") {
			return s, err
		}
		return stalledStream{ClientStream: s, stalled: stalled, received: received}, nil
	})
}

type stalledStream struct {
	grpc.ClientStream
	stalled  *atomic.Bool
	received *atomic.Int64
}

func (s stalledStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if s.received != nil {
		s.received.Add(1)
	}
	for s.stalled.Load() && s.Context().Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

// TestSecondKeepAliveGivesUpOnALiveLease shows the cause of a coordinator
// deposed for good while its node's lease lived: a keep-alive stream of
// the node's lease (etcd's concurrency.Session on the node's lease, as the
// coordinator role used to build) closes for good once one TTL passes
// without an answer, although the lease's owner keeps it alive.
func TestSecondKeepAliveGivesUpOnALiveLease(t *testing.T) {
	cli, _ := etcdClient(t)
	var stalled atomic.Bool
	var received atomic.Int64
	streamCli := etcdCluster.NewClient(t, stallKeepAlives(&stalled, &received))
	owner := newNodeLease(t, cli, 2)
	s, err := concurrency.NewSession(streamCli, concurrency.WithLease(owner.LeaseID()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Orphan()
	testutil.WaitFor(t, 10*time.Second, "a first keep-alive answer", func() bool { return received.Load() > 0 })
	stalled.Store(true)
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the second keep-alive did not give up: the cause is elsewhere")
	}
	stalled.Store(false)
	if !leaseAlive(t, cli, int64(owner.LeaseID())) {
		t.Fatal("the owner's lease expired: the test proves nothing")
	}
}

// TestCoordinatorIsReplacedWhenPausedPastTTL: the elected coordinator
// stops renewing (SIGSTOP) past its TTL while the survivor's keep-alive
// answers stall (an etcd leader election); the survivor is elected within
// TTL plus about a second, stays elected, and recovers the paused node.
// The paused one, woken, finds itself deposed and leaves no key behind.
func TestCoordinatorIsReplacedWhenPausedPastTTL(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	var stalled atomic.Bool
	cliB := etcdCluster.NewClient(t, stallKeepAlives(&stalled, nil))
	hooks := newStepHooks()
	fencer := fencing.FencerFunc(func(context.Context, fencing.NodeRef) error { return nil })

	la, lb := newNodeLease(t, cli, 2), newNodeLease(t, cli, 2)
	a := newCoordinator(t, cli, la, prefix, "a", fencer, hooks)
	_, resA := runCoordinator(t, a)
	testutil.WaitFor(t, 10*time.Second, "a elected", a.Leading)
	b := newCoordinator(t, cliB, lb, prefix, "b", fencer, hooks)
	_, resB := runCoordinator(t, b)

	stalled.Store(true)
	la.Pause()
	paused := time.Now()
	testutil.WaitFor(t, 10*time.Second, "b elected", b.Leading)
	took := time.Since(paused)
	t.Logf("b elected %v after a paused (TTL 2s)", took)
	if took > 4*time.Second {
		t.Errorf("b elected %v after the pause, want within TTL plus about a second", took)
	}
	// Leadership holds through the stall (longer than a TTL): nothing
	// deposes b while its lease is renewed.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if b.Leading() {
			continue
		}
		select {
		case err := <-resB:
			t.Fatalf("b deposed while its lease lived: %v", err)
		default:
			t.Fatal("b no longer leads while its lease lived")
		}
	}
	stalled.Store(false)
	if got := coordinatorKeys(t, cli, prefix); len(got) != 1 || got[0] != "b" {
		t.Fatalf("election keys %q, want only b's", got)
	}
	victim := fencing.NodeRef{Name: "a", Incarnation: "paused", Key: uint64(la.LeaseID())}
	if _, err := b.Request(ctx, victim); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "b recovers a", func() bool { return loadRecord(t, cli, prefix, victim).Done() })

	la.Wake()
	select {
	case err := <-resA:
		if !errors.Is(err, recovery.ErrDeposed) {
			t.Fatalf("a ended with %v, want ErrDeposed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("woken a did not stop")
	}
	if got := coordinatorKeys(t, cli, prefix); len(got) != 1 || got[0] != "b" {
		t.Fatalf("election keys after a woke %q, want only b's", got)
	}
}

// TestCoordinatorWithoutKeyStepsDownAndCampaignsAgain: when the elected
// coordinator's key disappears while its lease lives, it stops leading at
// once, the next candidate is elected, and the deposed one, campaigning
// again on the same lease, queues behind it: exactly one leads throughout.
func TestCoordinatorWithoutKeyStepsDownAndCampaignsAgain(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	hooks := newStepHooks()
	fencer := fencing.FencerFunc(func(context.Context, fencing.NodeRef) error { return nil })
	la, lb := newNodeLease(t, cli, 5), newNodeLease(t, cli, 5)
	a := newCoordinator(t, cli, la, prefix, "a", fencer, hooks)
	_, resA := runCoordinator(t, a)
	testutil.WaitFor(t, 10*time.Second, "a elected", a.Leading)
	b := newCoordinator(t, cli, lb, prefix, "b", fencer, hooks)
	runCoordinator(t, b)

	first, err := cli.Get(ctx, keys.Of(prefix).Coordinator()+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(first.Kvs) != 1 || string(first.Kvs[0].Value) != "a" {
		t.Fatalf("first election key %v err %v", first.Kvs, err)
	}
	if _, err := cli.Delete(ctx, string(first.Kvs[0].Key)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-resA:
		if !errors.Is(err, recovery.ErrDeposed) {
			t.Fatalf("a ended with %v, want ErrDeposed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a kept leading without its key")
	}
	testutil.WaitFor(t, 10*time.Second, "b elected", b.Leading)
	a2 := newCoordinator(t, cli, la, prefix, "a", fencer, hooks)
	runCoordinator(t, a2)
	testutil.WaitFor(t, 10*time.Second, "a queued again", func() bool { return len(coordinatorKeys(t, cli, prefix)) == 2 })
	if a2.Leading() || !b.Leading() {
		t.Fatalf("a leads %v, b leads %v: want b alone", a2.Leading(), b.Leading())
	}
	if got := coordinatorKeys(t, cli, prefix); got[0] != "b" {
		t.Fatalf("election keys %q, want b first", got)
	}
}

// TestCandidateTakesOverFromSuspectedCoordinator: the elected coordinator
// dies with a long lease left (its key stays); the failure detector asks
// for its recovery. The next candidate fences it first, then revokes its
// lease, and is elected at once instead of after the lease's TTL.
func TestCandidateTakesOverFromSuspectedCoordinator(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	g, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	dead := fencing.NewNodeRef("a", "self", int64(g.ID))
	// The dead coordinator's election key, as its campaign left it.
	if _, err := cli.Put(ctx, keys.Of(prefix).Coordinator()+"/dead", dead.String(), clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	var fencedAlive atomic.Int32
	fence := fencing.FencerFunc(func(_ context.Context, v fencing.NodeRef) error {
		if v.Name == "a" && leaseAlive(t, cli, v.LeaseID) {
			fencedAlive.Add(1)
		}
		return nil
	})
	hooks := newStepHooks()
	lb := newNodeLease(t, cli, 5)
	cfg := recovery.DefaultConfig()
	cfg.Name, cfg.Fencer, cfg.Hooks, cfg.Logger = "b", fence, hooks, testlog.New(t, "b")
	cfg.Backoff = fencing.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}
	b, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: cli, Lease: lb, Prefix: prefix, Engine: cfg, Rescan: 200 * time.Millisecond,
		Self: fencing.NodeRef{Name: "b", Incarnation: "self"}, FenceSuspect: fence,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCoordinator(t, b)
	testutil.WaitFor(t, 10*time.Second, "b queued behind the dead key", func() bool { return len(coordinatorKeys(t, cli, prefix)) == 2 })
	if b.Leading() {
		t.Fatal("b elected while the dead coordinator's key stands")
	}
	asked := time.Now()
	if _, err := b.Request(ctx, dead); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "b elected", b.Leading)
	took := time.Since(asked)
	t.Logf("b took over %v after the recovery of the dead coordinator was asked for (its lease had 30s left)", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Fatalf("b took %v: it waited for the lease", took)
	}
	if fencedAlive.Load() == 0 {
		t.Fatal("the suspect's lease was revoked before it was fenced")
	}
	testutil.WaitFor(t, 10*time.Second, "the dead coordinator recovered", func() bool { return loadRecord(t, cli, prefix, dead).Done() })
}
