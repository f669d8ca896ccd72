package dlm

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
)

const testPrefix = "/shoal-test"

type testNode struct {
	m     *LeaseMember
	n     *Node
	calls *atomic.Int64 // unary etcd requests made through the DLM's client
	delay *atomic.Int64 // nanoseconds each request through it is held back
	// failReleases makes every release transaction (a single request
	// key deleted) fail as if etcd could not be reached; failDowns does
	// the same to down-conversions that write a value block back; failed
	// counts them.
	failReleases *atomic.Bool
	failDowns    *atomic.Bool
	failed       *atomic.Int64
	// stallCreate makes the next request creation go unanswered until
	// its attempt ends, as one forwarded to an etcd leader that died
	// does: stallLost never sends it, stallLanded sends it (it commits)
	// and withholds the answer; stallRelease does the same to the next
	// release of a dead incarnation's locks. stalled counts such attempts.
	stallCreate  *atomic.Int32
	stallRelease *atomic.Int32
	stalled      *atomic.Int64
	// answerDelay holds back each answer (nanoseconds) after the request
	// was served.
	answerDelay *atomic.Int64
}

const (
	stallLost   = 1
	stallLanded = 2
)

// isReleaseDead reports whether req is the transaction that releases a
// dead incarnation's locks and records it.
func isReleaseDead(req any) bool {
	for _, op := range successOps(req) {
		if p := op.GetRequestPut(); p != nil && strings.Contains(string(p.Key), "/dlm/recovered/") {
			return true
		}
	}
	return false
}

// isCreate reports whether req is a transaction that creates a lock
// request (puts a request key and reads it back).
func isCreate(req any) bool {
	var put, get bool
	for _, op := range successOps(req) {
		if p := op.GetRequestPut(); p != nil && strings.Contains(string(p.Key), "/dlm/req/") {
			put = true
		}
		if r := op.GetRequestRange(); r != nil && strings.Contains(string(r.Key), "/dlm/req/") {
			get = true
		}
	}
	return put && get
}

// successOps lists the operations of req's success branch, those of
// nested transactions included; nil for a request that is not a
// transaction.
func successOps(req any) []*etcdserverpb.RequestOp {
	txn, ok := req.(*etcdserverpb.TxnRequest)
	if !ok {
		return nil
	}
	var out []*etcdserverpb.RequestOp
	var walk func([]*etcdserverpb.RequestOp)
	walk = func(ops []*etcdserverpb.RequestOp) {
		for _, op := range ops {
			if t := op.GetRequestTxn(); t != nil {
				walk(t.Success)
				continue
			}
			out = append(out, op)
		}
	}
	walk(txn.Success)
	return out
}

// isRelease reports whether req is a transaction that deletes one request
// key (a release), as opposed to a withdrawal of a whole prefix.
func isRelease(req any) bool {
	for _, op := range successOps(req) {
		if d := op.GetRequestDeleteRange(); d != nil && len(d.RangeEnd) == 0 && strings.Contains(string(d.Key), "/dlm/req/") {
			return true
		}
	}
	return false
}

// isDownConversion reports whether req is a transaction that rewrites a
// request key and writes a value block back: a down-conversion from PW or
// EX (a close's write-back puts the value block alone).
func isDownConversion(req any) bool {
	var reqPut, lvb bool
	for _, op := range successOps(req) {
		if p := op.GetRequestPut(); p != nil {
			reqPut = reqPut || strings.Contains(string(p.Key), "/dlm/req/")
			lvb = lvb || strings.Contains(string(p.Key), "/dlm/lvb/")
		}
	}
	return reqPut && lvb
}

// startTestNode joins a node named name through member i of c, with a
// client of its own whose requests are counted.
func startTestNode(t testing.TB, c *etcdtest.Cluster, i int, name string) *testNode {
	t.Helper()
	return startTestNodeWith(t, c, i, name, nil)
}

func startTestNodeWith(t testing.TB, c *etcdtest.Cluster, i int, name string, tune func(*Config)) *testNode {
	t.Helper()
	calls, delay := &atomic.Int64{}, &atomic.Int64{}
	failReleases, failDowns, failed := &atomic.Bool{}, &atomic.Bool{}, &atomic.Int64{}
	stallCreate, stallRelease, stalled, answerDelay := &atomic.Int32{}, &atomic.Int32{}, &atomic.Int64{}, &atomic.Int64{}
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		if failReleases.Load() && isRelease(req) || failDowns.Load() && isDownConversion(req) {
			failed.Add(1)
			return status.Error(codes.Unavailable, "injected: etcd unreachable")
		}
		stall := stallCreate
		if isReleaseDead(req) {
			stall = stallRelease
		}
		if m := stall.Load(); m != 0 && (isCreate(req) || isReleaseDead(req)) && stall.CompareAndSwap(m, 0) {
			if m == stallLanded {
				if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
					return err
				}
			}
			stalled.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}
		if d := delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if d := answerDelay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		return err
	})
	// Each part is cleaned up from the moment it exists (cleanups run
	// last first): a start that fails must not leave the member's
	// keep-alives logging to a test that has ended.
	cli, err := c.NewClientTo([]string{c.Endpoints[i]}, count)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	mcli, err := c.NewClientTo([]string{c.Endpoints[i]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mcli.Close() })
	closing := func(stop func(context.Context) error) func() {
		return func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = stop(ctx)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := JoinAsClient(ctx, LeaseMemberConfig{Client: mcli, Prefix: testPrefix, Name: name, TTL: 2 * time.Second, Margin: 300 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, Logger: testlog.New(t, name)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closing(m.Leave))
	cfg := DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix, cfg.Logger = cli, m, testPrefix, testlog.New(t, name)
	if tune != nil {
		tune(&cfg)
	}
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closing(n.Close))
	return &testNode{m: m, n: n, calls: calls, delay: delay, failReleases: failReleases, failDowns: failDowns, failed: failed, stallCreate: stallCreate, stallRelease: stallRelease, stalled: stalled, answerDelay: answerDelay}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ownRequest returns n's request on res as n's replica shows it.
func ownRequest(n *Node, res Resource) (LockInfo, bool) {
	for _, l := range n.Locks() {
		if l.Owner == n.Owner() && l.Resource == res {
			return l, true
		}
	}
	return LockInfo{}, false
}

func checkAll(t *testing.T, nodes ...*testNode) {
	t.Helper()
	// Every replica converges to the same table and passes Check. The
	// tables are compared as each replica saw them at one revision, the
	// same for all: a hand-over still in flight (a blocking callback
	// answered after the test's last step) moves the table on while the
	// nodes are read one after the other.
	tables := make([]string, len(nodes))
	testutil.WaitFor(t, 10*time.Second, "replicas to agree", func() bool {
		var rev int64
		for i, x := range nodes {
			x.n.mu.Lock()
			r := x.n.rev
			tables[i] = formatLocks(x.n.rep.Table.Locks())
			x.n.mu.Unlock()
			if i > 0 && r != rev {
				return false
			}
			rev = r
		}
		return true
	})
	for i, x := range nodes {
		if err := x.n.Check(); err != nil {
			t.Errorf("%s: Check: %v", x.m.Name(), err)
		}
		if tables[i] != tables[0] {
			t.Errorf("%s sees\n%s\nbut %s sees\n%s at the same revision", x.m.Name(), tables[i], nodes[0].m.Name(), tables[0])
		}
	}
}

func TestCluster(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	c := etcdtest.NewCluster(t, 3)
	// Every subtest starts its own nodes (closed when it ends) and uses
	// its own resources: each can run alone (-run) and in any order.
	nodes := func(t *testing.T) (a, b, coord *testNode) {
		return startTestNode(t, c, 0, "a"), startTestNode(t, c, 1, "b"), startTestNode(t, c, 2, "coord")
	}

	t.Run("CachedReacquireMakesNoEtcdRequest", func(t *testing.T) {
		a, b, coord := nodes(t)
		foo := Named("cached")
		l, err := a.n.Acquire(ctxT(t, 10*time.Second), foo, EX)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.SetLVB([]byte("from-a")); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 5*time.Second, "a's request write to finish", func() bool {
			a.n.mu.Lock()
			defer a.n.mu.Unlock()
			return !a.n.locks[foo.String()].busy
		})
		before := a.calls.Load()
		for range 2000 {
			l, err := a.n.Acquire(context.Background(), foo, PR)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Use(); err != nil {
				t.Fatal(err)
			}
			if err := l.Release(); err != nil {
				t.Fatal(err)
			}
		}
		if d := a.calls.Load() - before; d != 0 {
			t.Fatalf("cached re-acquire made %d etcd requests", d)
		}
		if st := a.n.Stats(); st.CachedGrants < 2000 || st.ClusterGrants < 1 || st.EtcdWrites < 1 {
			t.Fatalf("stats after cached re-acquires: %+v", st)
		}
		checkAll(t, a, b, coord)
	})

	t.Run("HandoffByBlockingCallback", func(t *testing.T) {
		a, b, coord := nodes(t)
		foo := Named("handoff")
		la, err := a.n.Acquire(ctxT(t, 5*time.Second), foo, EX)
		if err != nil {
			t.Fatal(err)
		}
		if err := la.SetLVB([]byte("from-a")); err != nil {
			t.Fatal(err)
		}
		got := make(chan *Lock, 1)
		errc := make(chan error, 1)
		go func() {
			l, err := b.n.Acquire(ctxT(t, 20*time.Second), foo, PR)
			errc <- err
			got <- l
		}()
		// b waits while a's local user holds the lock, and a got a callback.
		testutil.WaitFor(t, 5*time.Second, "blocking callback to a", func() bool {
			for _, l := range a.n.Locks() {
				if l.Owner == a.n.Owner() && l.Blocking {
					return true
				}
			}
			return false
		})
		select {
		case <-la.Blocking():
		case <-time.After(5 * time.Second):
			t.Fatal("a's holder was not told that b waits")
		}
		select {
		case <-got:
			t.Fatal("b granted while a's user holds EX")
		default:
		}
		// A new local user on a must not jump ahead of b.
		if _, err := a.n.Acquire(ctxT(t, 5*time.Second), foo, CR, Try()); !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("local try while blocking: %v, want ErrWouldBlock", err)
		}
		if err := la.Release(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		lb := <-got
		if lb.Token() <= la.Token() {
			t.Fatalf("token %s not above %s", lb.Token(), la.Token())
		}
		if v, ok := lb.LVB(); !ok || string(v[:6]) != "from-a" {
			t.Fatalf("b reads value block %q valid=%v, want from-a", v, ok)
		}
		lb.Release()
		checkAll(t, a, b, coord)
	})

	t.Run("TryAndCancelLeaveNothing", func(t *testing.T) {
		a, b, coord := nodes(t)
		foo := Named("try")
		lb, err := b.n.Acquire(ctxT(t, 5*time.Second), foo, EX)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.n.Acquire(ctxT(t, 5*time.Second), foo, PR, Try()); !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("try: %v, want ErrWouldBlock", err)
		}
		short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := a.n.Acquire(short, foo, PR); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("timed-out acquire: %v", err)
		}
		testutil.WaitFor(t, 5*time.Second, "a's cancelled request to vanish", func() bool {
			for _, l := range coord.n.Locks() {
				if l.Owner == a.n.Owner() {
					return false
				}
			}
			return true
		})
		lb.Release()
		checkAll(t, a, b, coord)
	})

	t.Run("RegionsConflictOnlyWhereTheyOverlap", func(t *testing.T) {
		a, b, coord := nodes(t)
		r1, err := a.n.Acquire(ctxT(t, 5*time.Second), Region("vol", 0, 4096), EX)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := b.n.Acquire(ctxT(t, 5*time.Second), Region("vol", 4096, 8192), EX)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.n.Acquire(ctxT(t, 5*time.Second), Region("vol", 4000, 4100), PR, Try()); !errors.Is(err, ErrWouldBlock) {
			t.Fatalf("overlapping try: %v", err)
		}
		r1.Release()
		r2.Release()
		checkAll(t, a, b, coord)
	})

	t.Run("DeadHolderGatedToCoordinator", func(t *testing.T) {
		a, b, coord := nodes(t)
		foo := Named("gated")
		var tokens []Token // grants of foo in order; must strictly increase
		la, err := a.n.Acquire(ctxT(t, 10*time.Second), foo, EX)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, la.Token())
		if err := la.Use(); err != nil {
			t.Fatal(err)
		}
		if err := la.SetLVB([]byte("never-written")); err != nil {
			t.Fatal(err)
		}
		waitB := make(chan *Lock, 1)
		go func() {
			l, err := b.n.Acquire(ctxT(t, 30*time.Second), foo, EX)
			if err != nil {
				t.Error(err)
			}
			waitB <- l
		}()
		testutil.WaitFor(t, 5*time.Second, "b to queue", func() bool {
			for _, l := range coord.n.Locks() {
				if l.Owner == b.n.Owner() && !l.Held {
					return true
				}
			}
			return false
		})
		// a stops renewing its lease, as a paused or dead node would.
		a.m.Stop()
		select {
		case <-a.n.Lost():
		case <-time.After(5 * time.Second):
			t.Fatal("a did not fence itself")
		}
		if err := la.Use(); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Use after deadline: %v", err)
		}
		audit := a.n.Audit()
		if !audit.LastUse.Before(audit.DeadlineAtLastUse) {
			t.Fatalf("last use %v not before its deadline %v", audit.LastUse, audit.DeadlineAtLastUse)
		}
		// a fenced itself before the cluster let its lease go.
		if err := coord.n.WaitDead(ctxT(t, 10*time.Second), a.n.Owner()); err != nil {
			t.Fatal(err)
		}
		if !audit.FencedAt.Before(time.Now()) {
			t.Fatal("fence time in the future")
		}
		// Unrelated resources keep working during the recovery.
		start := time.Now()
		lz, err := b.n.Acquire(ctxT(t, 5*time.Second), Named("unrelated"), EX)
		if err != nil {
			t.Fatal(err)
		}
		lz.Release()
		t.Logf("unrelated grant during recovery took %v", time.Since(start))
		// Only the coordinator gets the orphaned lock.
		lr, err := coord.n.Acquire(ctxT(t, 5*time.Second), foo, EX, Recovery())
		if err != nil {
			t.Fatalf("recovery acquire: %v\n%s", err, formatLocks(coord.n.Locks()))
		}
		if lr.Token() <= tokens[len(tokens)-1] {
			t.Fatalf("recovery token %s not above %s", lr.Token(), tokens[len(tokens)-1])
		}
		tokens = append(tokens, lr.Token())
		if _, ok := lr.LVB(); ok {
			t.Fatal("value block valid after its EX holder died")
		}
		select {
		case <-waitB:
			t.Fatal("b granted before recovery released the orphan")
		default:
		}
		if err := coord.n.ReleaseDead(ctxT(t, 5*time.Second), a.n.Owner()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-waitB:
			t.Fatal("b granted while the coordinator holds the recovery lock")
		case <-time.After(100 * time.Millisecond):
		}
		lr.Release()
		var lb *Lock
		select {
		case lb = <-waitB:
		case <-time.After(10 * time.Second):
			t.Fatal("b not granted after recovery")
		}
		if lb == nil {
			t.FailNow()
		}
		if lb.Token() <= tokens[len(tokens)-1] {
			t.Fatalf("token %s not above %s", lb.Token(), tokens[len(tokens)-1])
		}
		lb.Release()
		checkAll(t, b, coord)
	})
}

// TestWaitDeadOfAnIncarnationSeenOnlyDead covers a coordinator that joined
// after an incarnation died holding nothing: it counts as dead at once.
func TestWaitDeadOfAnIncarnationSeenOnlyDead(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	a := startTestNode(t, c, 0, "a")
	gone := a.n.Owner()
	ctx := ctxT(t, 10*time.Second)
	if err := a.n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.m.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	b := startTestNode(t, c, 0, "b")
	if err := b.n.WaitDead(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := b.n.ReleaseDead(ctx, gone); err != nil {
		t.Fatal(err)
	}
	// A live incarnation is not dead.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := b.n.WaitDead(short, b.n.Owner()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitDead of a live incarnation: %v", err)
	}
	if err := b.n.ReleaseDead(ctx, b.n.Owner()); err == nil {
		t.Fatal("ReleaseDead of a live incarnation succeeded")
	}
}

// TestJoinAfterCompaction: a node joining after etcd compacted the DLM's
// history starts from a checkpoint and agrees with the others.
func TestJoinAfterCompaction(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	fast := func(cfg *Config) { cfg.CheckpointInterval = 200 * time.Millisecond }
	a := startTestNodeWith(t, c, 0, "a", fast)
	b := startTestNodeWith(t, c, 0, "b", fast)
	ctx := ctxT(t, 20*time.Second)
	la, err := a.n.Acquire(ctx, Named("x"), EX)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Release()
	waitB := make(chan error, 1)
	go func() {
		l, err := b.n.Acquire(ctx, Named("x"), PR)
		if err == nil {
			l.Release()
		}
		waitB <- err
	}()
	lb, err := b.n.Acquire(ctx, Region("vol", 0, 10), PW)
	if err != nil {
		t.Fatal(err)
	}
	lb.Release()
	// Wait for a checkpoint that covers all of the above, then compact.
	var cpRev int64
	testutil.WaitFor(t, 10*time.Second, "a checkpoint", func() bool {
		resp, err := c.Client(0).Get(ctx, testPrefix+"/dlm/checkpoint")
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		r, err := RestoreReplica(testPrefix, resp.Kvs[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		cpRev = r.Table.Revision()
		return len(r.Table.Locks()) >= 3
	})
	if _, err := c.Client(0).Compact(ctx, cpRev); err != nil {
		t.Fatal(err)
	}
	x := startTestNodeWith(t, c, 0, "x", fast)
	checkAll(t, a, b, x)
	la.Release()
	if err := <-waitB; err != nil {
		t.Fatal(err)
	}
	// The newcomer takes part in the queue like anyone else.
	lx, err := x.n.Acquire(ctx, Named("x"), EX)
	if err != nil {
		t.Fatal(err)
	}
	lx.Release()
	checkAll(t, a, b, x)
}

// TestJoinAfterCompactionPastTheCheckpoint: etcd compacted the history a
// joiner (or a listing) needs and no checkpoint is newer than the
// compaction. The joiner asks the live nodes for a checkpoint and catches
// up at once, instead of being refused until the next periodic one; with
// no live node to answer, the error names the compaction.
func TestJoinAfterCompactionPastTheCheckpoint(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	slow := func(cfg *Config) { cfg.CheckpointInterval = time.Hour } // no periodic checkpoint in this test
	a := startTestNodeWith(t, c, 0, "a", slow)
	b := startTestNodeWith(t, c, 0, "b", slow)
	ctx := ctxT(t, 30*time.Second)
	la, err := a.n.Acquire(ctx, Named("x"), EX)
	if err != nil {
		t.Fatal(err)
	}
	waitB := make(chan error, 1)
	go func() {
		l, err := b.n.Acquire(ctx, Named("x"), PR)
		if err == nil {
			l.Release()
		}
		waitB <- err
	}()
	lb, err := b.n.Acquire(ctx, Region("vol", 0, 10), PW)
	if err != nil {
		t.Fatal(err)
	}
	lb.Release()
	testutil.WaitFor(t, 5*time.Second, "b's request to queue", func() bool { return len(a.n.WaitFor()) > 0 })
	resp, err := c.Client(0).Get(ctx, "compact-here")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client(0).Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}

	// A listing and a joiner catch up within seconds, not a checkpoint
	// interval (an hour here).
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer lcancel()
	rep, _, err := LoadTable(lctx, c.Client(0), testPrefix)
	if err != nil {
		t.Fatalf("listing after compaction: %v", err)
	}
	if got, want := formatLocks(rep.Table.Locks()), formatLocks(a.n.Locks()); got != want {
		t.Fatalf("listing after compaction:\n%s\nwant (a's replica):\n%s", got, want)
	}
	x := startTestNodeWith(t, c, 0, "x", func(cfg *Config) { slow(cfg); cfg.StartTimeout = 5 * time.Second })
	checkAll(t, a, b, x)
	la.Release()
	if err := <-waitB; err != nil {
		t.Fatal(err)
	}
	lx, err := x.n.Acquire(ctx, Named("x"), EX)
	if err != nil {
		t.Fatal(err)
	}
	lx.Release()
	checkAll(t, a, b, x)

	// Under a prefix where nobody runs a lock manager, nobody answers: the
	// error names the compaction.
	const ghost = "/shoal-ghost"
	cli := c.Client(0)
	if _, err := cli.Put(ctx, ghost+"/dlm/req/g/1/0000000000000000", `{"res":{"name":"r"},"mode":5}`); err != nil {
		t.Fatal(err)
	}
	resp, err = cli.Get(ctx, "compact-here")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithTimeout(context.Background(), time.Second)
	defer gcancel()
	if _, _, err := LoadTable(gctx, cli, ghost); !errors.Is(err, ErrCompacted) {
		t.Fatalf("listing with no node to answer: %v, want ErrCompacted", err)
	}
}

// TestReleaseDeadOfManyLocks: a dead node held more EX locks than etcd
// allows operations in one transaction (128): the coordinator still
// releases them all, and their value blocks are invalid in etcd.
func TestReleaseDeadOfManyLocks(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	const n = 300
	var held []Resource
	for i := range uint64(n) {
		held = append(held, Region("many", i*10, i*10+10))
	}
	c, a, coord, ctx := diedHolding(t, held)
	if err := coord.n.ReleaseDead(ctx, a.n.Owner()); err != nil {
		t.Fatalf("releasing %d locks of a dead node: %v", n, err)
	}
	for _, l := range coord.n.Locks() {
		if l.Owner == a.n.Owner() {
			t.Fatalf("lock of the dead node left: %+v", l)
		}
	}
	resp, err := c.Client(0).Get(ctx, testPrefix+"/dlm/lvb/many@", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != n {
		t.Fatalf("%d value blocks written back, want %d", len(resp.Kvs), n)
	}
	for _, kv := range resp.Kvs {
		var v lvbValue
		if err := json.Unmarshal(kv.Value, &v); err != nil || v.Valid {
			t.Fatalf("value block %s = %s, want invalid", kv.Key, kv.Value)
		}
	}
	checkAll(t, coord)
}

// TestReleaseDeadRegionsFirst: the recovery coordinator releases a dead
// node's region locks of the volumes it names ahead of the rest (the
// resync no longer needs them): a waiter on such a region is granted at
// once, while waiters on the dead node's named lock and on a region of
// another volume stay waiting until ReleaseDead.
func TestReleaseDeadRegionsFirst(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	held := []Resource{Region("vol", 0, 100), Region("vol-csum", 0, 10), Region("other", 0, 100), Named("store/i/1")}
	_, a, coord, ctx := diedHolding(t, held)
	got := make([]chan error, len(held))
	for i, r := range held {
		got[i] = make(chan error, 1)
		go func() {
			l, err := coord.n.Acquire(ctx, r, PR)
			if err == nil {
				l.Release()
			}
			got[i] <- err
		}()
	}
	testutil.WaitFor(t, 10*time.Second, "the coordinator's requests to queue", func() bool {
		n := 0
		for _, l := range coord.n.Locks() {
			if l.Owner == coord.n.Owner() && l.Waiting() {
				n++
			}
		}
		return n == len(held)
	})
	n, err := coord.n.ReleaseDeadRegions(ctx, a.n.Owner(), "vol", "vol-csum")
	if err != nil || n != 2 {
		t.Fatalf("released %d region locks (%v), want 2", n, err)
	}
	for i := range 2 {
		select {
		case err := <-got[i]:
			if err != nil {
				t.Fatalf("%s: %v", held[i], err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not granted after its region lock was released", held[i])
		}
	}
	for i := 2; i < len(held); i++ {
		select {
		case err := <-got[i]:
			t.Fatalf("%s granted (%v) while the dead node's lock stands", held[i], err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Again: nothing left of those volumes, nothing released.
	if n, err := coord.n.ReleaseDeadRegions(ctx, a.n.Owner(), "vol", "vol-csum"); err != nil || n != 0 {
		t.Fatalf("second release: %d (%v), want 0", n, err)
	}
	if err := coord.n.ReleaseDead(ctx, a.n.Owner()); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < len(held); i++ {
		if err := <-got[i]; err != nil {
			t.Fatalf("%s: %v", held[i], err)
		}
	}
	checkAll(t, coord)
}

// diedHolding starts node a and a coordinator on one etcd member; a takes
// each of held EX and keeps it cached, then dies (its member stops); it
// returns once the coordinator's lock table counts a dead. ctx lasts 30 s.
func diedHolding(t *testing.T, held []Resource) (*etcdtest.Cluster, *testNode, *testNode, context.Context) {
	t.Helper()
	c := etcdtest.NewCluster(t, 1)
	a := startTestNode(t, c, 0, "a")
	coord := startTestNode(t, c, 0, "coord")
	ctx := ctxT(t, 30*time.Second)
	for _, r := range held {
		l, err := a.n.Acquire(ctx, r, EX)
		if err != nil {
			t.Fatal(err)
		}
		l.Release() // cached: the node keeps it
	}
	testutil.WaitFor(t, 10*time.Second, "the coordinator to see a's locks", func() bool {
		n := 0
		for _, l := range coord.n.Locks() {
			if l.Owner == a.n.Owner() && l.Held {
				n++
			}
		}
		return n == len(held)
	})
	a.m.Stop()
	if err := coord.n.WaitDead(ctx, a.n.Owner()); err != nil {
		t.Fatal(err)
	}
	return c, a, coord, ctx
}
