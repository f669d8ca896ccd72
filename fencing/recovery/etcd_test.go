package recovery_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/fencetest"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/internal/testlog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/shoal-ha/shoal/internal/testutil"
)

var (
	etcdOnce    sync.Once
	etcdCluster *etcdtest.Cluster
	etcdDir     string
	etcdErr     error
	prefixSeq   atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if etcdCluster != nil {
		etcdCluster.Close()
		os.RemoveAll(etcdDir)
	}
	os.Exit(code)
}

// etcdClient returns a new client of the package's one-member cluster and
// a key prefix of the test's own.
func etcdClient(t *testing.T) (*clientv3.Client, string) {
	t.Helper()
	etcdOnce.Do(func() {
		etcdDir, etcdErr = os.MkdirTemp("", "recovery-etcd-")
		if etcdErr == nil {
			etcdCluster, etcdErr = etcdtest.Start(etcdDir, 1, etcdtest.Options{})
		}
	})
	if etcdErr != nil {
		t.Fatal(etcdErr)
	}
	return etcdCluster.NewClient(t), fmt.Sprintf("/t%d", prefixSeq.Add(1))
}

// testSession is a concurrency.Session used as a coordinator's Lease: it
// is lost when its keep-alive ends or it is closed.
type testSession struct{ *concurrency.Session }

func (s testSession) LeaseID() clientv3.LeaseID { return s.Lease() }
func (s testSession) Lost() <-chan struct{}     { return s.Done() }

func session(t *testing.T, cli *clientv3.Client) testSession {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return testSession{s}
}

func loadRecord(t *testing.T, cli *clientv3.Client, prefix string, v fencing.NodeRef) recovery.Record {
	t.Helper()
	rec, ok, err := recovery.NewEtcdStore(cli, prefix, nil).Load(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return recovery.Record{}
	}
	return rec
}

func history(rec recovery.Record) string {
	var s []string
	for _, h := range rec.History {
		s = append(s, h.Step.String()+"="+h.Coordinator)
	}
	return strings.Join(s, " ")
}

// grantVictim gives the victim an etcd lease as its membership would.
func grantVictim(t *testing.T, cli *clientv3.Client, name string, ttl int64) fencing.NodeRef {
	t.Helper()
	l, err := cli.Grant(context.Background(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return fencing.NewNodeRef(name, fmt.Sprintf("inc-%x", int64(l.ID)), int64(l.ID))
}

func leaseAlive(t *testing.T, cli *clientv3.Client, id int64) bool {
	t.Helper()
	_, found, err := fencing.EtcdLeases{Client: cli}.LeaseTTL(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestEtcdStoreDeposedCannotWrite(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	sa, sb := session(t, cli), session(t, cli)
	ea := concurrency.NewElection(sa.Session, keys.Of(prefix).Coordinator())
	if err := ea.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	storeA := recovery.NewEtcdStore(cli, prefix, nil)
	storeA.Lead(ea.Key(), ea.Rev())
	v := fencing.NewNodeRef("n1", "i1", 0)
	rec := recovery.NewRecord(v, "a", time.Now()).TakeOver("a", time.Now())
	if err := storeA.Save(ctx, rec, nil); err != nil {
		t.Fatalf("leader save: %v", err)
	}
	// a dies; b is elected.
	if err := sa.Close(); err != nil {
		t.Fatal(err)
	}
	eb := concurrency.NewElection(sb.Session, keys.Of(prefix).Coordinator())
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := eb.Campaign(cctx, "b"); err != nil {
		t.Fatal(err)
	}
	rec.Coordinator = "a-late"
	if err := storeA.Save(ctx, rec, nil); !errors.Is(err, recovery.ErrDeposed) {
		t.Fatalf("deposed save = %v, want ErrDeposed", err)
	}
	if got := loadRecord(t, cli, prefix, v); got.Coordinator != "a" {
		t.Fatalf("deposed write reached etcd: %+v", got)
	}
	storeB := recovery.NewEtcdStore(cli, prefix, nil)
	storeB.Lead(eb.Key(), eb.Rev())
	rec.Coordinator = "b"
	if err := storeB.Save(ctx, rec, nil); err != nil {
		t.Fatal(err)
	}
	// A request never overwrites an existing record.
	created, err := storeA.Request(ctx, recovery.NewRecord(v, "c", time.Now()))
	if err != nil || created {
		t.Fatalf("request over existing record: created=%v err=%v", created, err)
	}
}

// stepHooks count each hook's completed effects and can hold one step.
type stepHooks struct {
	mu      sync.Mutex
	effects map[string][]string // victim -> completed effects
	hold    map[string]chan struct{}
	entered map[string]chan struct{}
	check   func(step string, v fencing.NodeRef) error
}

func newStepHooks() *stepHooks {
	return &stepHooks{effects: map[string][]string{}, hold: map[string]chan struct{}{}, entered: map[string]chan struct{}{}}
}

// holdStep makes step block (until ctx ends) the first time it runs.
func (h *stepHooks) holdStep(step string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold[step] = make(chan struct{})
	h.entered[step] = make(chan struct{})
	return h.entered[step]
}

func (h *stepHooks) do(ctx context.Context, step string, v fencing.NodeRef) error {
	h.mu.Lock()
	hold, entered := h.hold[step], h.entered[step]
	delete(h.hold, step)
	h.mu.Unlock()
	if hold != nil {
		close(entered)
		<-ctx.Done()
		return ctx.Err()
	}
	if h.check != nil {
		if err := h.check(step, v); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.effects[v.Name] = append(h.effects[v.Name], step)
	return nil
}

func (h *stepHooks) of(name string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.effects[name]...)
}

func (h *stepHooks) ReplayJournal(ctx context.Context, v fencing.NodeRef) error {
	return h.do(ctx, "replay-journal", v)
}
func (h *stepHooks) ResyncBitmap(ctx context.Context, v fencing.NodeRef) error {
	return h.do(ctx, "resync", v)
}
func (h *stepHooks) ReleaseLocks(ctx context.Context, v fencing.NodeRef) error {
	return h.do(ctx, "release-locks", v)
}

type countingFencer struct {
	inner fencing.Fencer
	mu    sync.Mutex
	ok    map[string]int
}

func (c *countingFencer) Fence(ctx context.Context, v fencing.NodeRef) error {
	err := c.inner.Fence(ctx, v)
	if err == nil {
		c.mu.Lock()
		c.ok[v.Name]++
		c.mu.Unlock()
	}
	return err
}

func newCoordinator(t *testing.T, cli *clientv3.Client, sess recovery.Lease, prefix, name string, f fencing.Fencer, h recovery.Hooks) *recovery.Coordinator {
	t.Helper()
	cfg := recovery.DefaultConfig()
	cfg.Name = name
	cfg.Fencer = f
	cfg.Hooks = h
	cfg.Backoff = fencing.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}
	cfg.Logger = testlog.New(t, name)
	c, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: cli, Lease: sess, Prefix: prefix, Engine: cfg, Rescan: 200 * time.Millisecond,
		Self: fencing.NodeRef{Name: name, Incarnation: "self"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runCoordinator(t *testing.T, c *recovery.Coordinator) (cancel func(), result <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ch <- c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("coordinator did not stop")
		}
	})
	return cancel, ch
}

// TestCoordinatorKilledBetweenStepsIsResumed: coordinator a dies (its
// session ends) after the resync, while replaying the journal; b is
// elected, resumes at the replay and no finished step's effect repeats.
func TestCoordinatorKilledBetweenStepsIsResumed(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	victim := grantVictim(t, cli, "n1", 60)
	hooks := newStepHooks()
	fencer := &countingFencer{inner: fencing.FencerFunc(func(context.Context, fencing.NodeRef) error { return nil }), ok: map[string]int{}}
	inReplay := hooks.holdStep("replay-journal")

	sa, sb := session(t, cli), session(t, cli)
	a := newCoordinator(t, cli, sa, prefix, "a", fencer, hooks)
	_, resA := runCoordinator(t, a)
	testutil.WaitFor(t, 20*time.Second, "a elected", a.Leading)
	b := newCoordinator(t, cli, sb, prefix, "b", fencer, hooks)
	runCoordinator(t, b)

	if created, err := b.Request(ctx, victim); err != nil || !created {
		t.Fatalf("request: created=%v err=%v", created, err)
	}
	select {
	case <-inReplay:
	case <-time.After(20 * time.Second):
		t.Fatal("a never reached the replay")
	}
	if rec := loadRecord(t, cli, prefix, victim); rec.Finished != recovery.StepResync || rec.Coordinator != "a" {
		t.Fatalf("before a dies: finished %s by %s", rec.Finished, rec.Coordinator)
	}
	if b.Leading() {
		t.Fatal("two coordinators elected")
	}
	// a dies: its lease is gone, its election key with it.
	if err := sa.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-resA:
		if !errors.Is(err, recovery.ErrDeposed) {
			t.Fatalf("a ended with %v, want ErrDeposed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a did not stop")
	}
	testutil.WaitFor(t, 20*time.Second, "recovery done", func() bool { return loadRecord(t, cli, prefix, victim).Done() })
	rec := loadRecord(t, cli, prefix, victim)
	want := "fence=a record-fence=a resync=a replay-journal=b release-locks=b done=b"
	if got := history(rec); got != want {
		t.Fatalf("history %q, want %q", got, want)
	}
	if got := hooks.of("n1"); !slices.Equal(got, []string{"resync", "replay-journal", "release-locks"}) {
		t.Fatalf("effects %v: a step repeated or missing", got)
	}
	if fencer.ok["n1"] != 1 {
		t.Fatalf("victim fenced %d times", fencer.ok["n1"])
	}
	if leaseAlive(t, cli, victim.LeaseID) {
		t.Fatal("victim lease not revoked")
	}
	f, ok, err := recovery.Fenced(ctx, cli, prefix, victim)
	if err != nil || !ok || f.Coordinator != "a" {
		t.Fatalf("fence record %+v ok=%v err=%v", f, ok, err)
	}
}

// TestCoordinatorReservationFencing recovers two victims at once with
// persistent-reservation fencing: by the time each one's locks are
// released its key is gone from every leg, its lease is revoked, and its
// writes conflict.
func TestCoordinatorReservationFencing(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	legs := []*fencetest.Target{
		fencetest.NewTarget(fencetest.Options{NoPreemptAndAbort: true}),
		fencetest.NewTarget(fencetest.Options{}),
	}
	type member struct {
		ref    fencing.NodeRef
		inits  []*fencetest.Initiator
		fencer *fencing.ReservationFencer
	}
	join := func(ref fencing.NodeRef) *member {
		m := &member{ref: ref}
		var ls []fencing.Leg
		for i, tg := range legs {
			in := tg.Initiator(ref.Name)
			m.inits = append(m.inits, in)
			ls = append(ls, fencing.Leg{Name: fmt.Sprintf("leg%d", i), Dev: in})
		}
		f, err := fencing.NewReservationFencer(fencing.ReservationConfig{Self: ref, Legs: func() []fencing.Leg { return ls }, Logger: testlog.New(t, ref.Name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Join(ctx); err != nil {
			t.Fatal(err)
		}
		m.fencer = f
		return m
	}
	survivor := join(grantVictim(t, cli, "n0", 60))
	v1 := join(grantVictim(t, cli, "n1", 60))
	v2 := join(grantVictim(t, cli, "n2", 60))

	hooks := newStepHooks()
	hooks.check = func(step string, v fencing.NodeRef) error {
		for i, tg := range legs {
			if slices.Contains(tg.Keys(), v.Key) {
				return fmt.Errorf("%s of %s before its key left leg %d", step, v, i)
			}
		}
		if leaseAlive(t, cli, v.LeaseID) {
			return fmt.Errorf("%s of %s with its lease alive", step, v)
		}
		return nil
	}
	c := newCoordinator(t, cli, session(t, cli), prefix, "n0", survivor.fencer, hooks)
	stopC, resC := runCoordinator(t, c)
	for _, v := range []*member{v1, v2} {
		if _, err := c.Request(ctx, v.ref); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []*member{v1, v2} {
		testutil.WaitFor(t, 20*time.Second, "recovery of "+v.ref.Name, func() bool { return loadRecord(t, cli, prefix, v.ref).Done() })
		if got := hooks.of(v.ref.Name); !slices.Equal(got, []string{"resync", "replay-journal", "release-locks"}) {
			t.Fatalf("%s effects %v", v.ref.Name, got)
		}
		for i, in := range v.inits {
			if err := in.WriteAt(ctx, make([]byte, 512), 0); !errors.Is(err, blockdev.ErrReservationConflict) {
				t.Fatalf("fenced %s wrote to leg %d: %v", v.ref.Name, i, err)
			}
		}
	}
	for i, in := range survivor.inits {
		if err := in.WriteAt(ctx, make([]byte, 512), 0); err != nil {
			t.Fatalf("survivor write leg %d: %v", i, err)
		}
	}
	recs, err := recovery.List(ctx, cli, prefix)
	if err != nil || len(recs) != 2 || len(recovery.InProgress(recs)) != 0 {
		t.Fatalf("list: %d records, %d in progress, err %v", len(recs), len(recovery.InProgress(recs)), err)
	}
	// An unfinished request survives pruning; the finished ones go.
	stopC()
	if err := <-resC; !errors.Is(err, context.Canceled) {
		t.Fatalf("coordinator ended with %v", err)
	}
	pending := fencing.NodeRef{Name: "n9", Incarnation: "1", Key: 99}
	if _, err := recovery.NewEtcdStore(cli, prefix, nil).Request(ctx, recovery.NewRecord(pending, "t", time.Now())); err != nil {
		t.Fatal(err)
	}
	if n, err := recovery.Prune(ctx, cli, prefix, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("prune of recent records: %d, %v", n, err)
	}
	if n, err := recovery.Prune(ctx, cli, prefix, time.Now().Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	recs, err = recovery.List(ctx, cli, prefix)
	if err != nil || len(recs) != 1 || recs[0].Victim.Name != "n9" {
		t.Fatalf("after prune: %+v %v", recs, err)
	}
	if _, ok, _ := recovery.Fenced(ctx, cli, prefix, v1.ref); ok {
		t.Fatal("fence record of a pruned recovery left behind")
	}
}

// TestCoordinatorFenceAgentFailsOrHangs: while the fence agent fails or
// hangs the recovery waits, retries and reports, and none of the victim's
// locks is released; once the agent works the recovery finishes.
func TestCoordinatorFenceAgentFailsOrHangs(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	dir := t.TempDir()
	agentPath := filepath.Join(dir, "fence_test")
	writeAgent := func(body string) {
		// Write to a new file and rename, so a run in progress keeps the
		// old one and the kernel never sees a half-written script.
		tmp := agentPath + ".new"
		if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, agentPath); err != nil {
			t.Fatal(err)
		}
	}
	writeAgent("echo 'Failed: unable to connect to fence device' >&2\nexit 1\n")
	acfg := fencing.DefaultAgentConfig(agentPath)
	acfg.Timeout = 300 * time.Millisecond
	acfg.Logger = testlog.New(t, "agent")
	agent, err := fencing.NewAgentFencer(acfg)
	if err != nil {
		t.Fatal(err)
	}
	victim := grantVictim(t, cli, "n1", 60)
	hooks := newStepHooks()
	var attempts atomic.Int64
	cfg := recovery.DefaultConfig()
	cfg.Name = "n0"
	cfg.Fencer = agent
	cfg.Hooks = hooks
	cfg.Backoff = fencing.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Multiplier: 2}
	cfg.Logger = testlog.New(t, "n0")
	cfg.OnFenceAttempt = func(a fencing.Attempt) { attempts.Add(1) }
	c, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: cli, Lease: session(t, cli), Prefix: prefix, Engine: cfg,
		Self: fencing.NodeRef{Name: "n0", Incarnation: "self"},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCoordinator(t, c)
	if _, err := c.Request(ctx, victim); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "failing agent retried", func() bool {
		rec := loadRecord(t, cli, prefix, victim)
		return rec.Attempts >= 3 && strings.Contains(rec.LastError, "exit code 1")
	})
	writeAgent("sleep 60\n")
	testutil.WaitFor(t, 20*time.Second, "hanging agent reported", func() bool {
		return strings.Contains(loadRecord(t, cli, prefix, victim).LastError, "timed out")
	})
	rec := loadRecord(t, cli, prefix, victim)
	if rec.Finished != recovery.StepNone || len(hooks.of("n1")) != 0 || !leaseAlive(t, cli, victim.LeaseID) {
		t.Fatalf("recovery went past a failed fence: finished %s, effects %v", rec.Finished, hooks.of("n1"))
	}
	var buf strings.Builder
	if err := recovery.WriteTable(&buf, recovery.InProgress([]recovery.Record{rec}), time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "n1") || !strings.Contains(buf.String(), "fence") || !strings.Contains(buf.String(), "timed out") {
		t.Fatalf("status table does not show the stuck fence:\n%s", buf.String())
	}
	t.Logf("status while the agent hangs:\n%s", buf.String())
	writeAgent("echo Success: Powered OFF\nexit 0\n")
	testutil.WaitFor(t, 20*time.Second, "recovery done", func() bool { return loadRecord(t, cli, prefix, victim).Done() })
	if got := hooks.of("n1"); !slices.Equal(got, []string{"resync", "replay-journal", "release-locks"}) {
		t.Fatalf("effects %v", got)
	}
	if attempts.Load() < 5 {
		t.Fatalf("only %d fence attempts reported", attempts.Load())
	}
}

// TestLeaseOnlyRecoveryWaitsForExpiry: in lease-only mode the fence step
// ends no sooner than the victim's lease expiry plus the margin.
func TestLeaseOnlyRecoveryWaitsForExpiry(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	const ttl = 2
	const margin = 300 * time.Millisecond
	victim := grantVictim(t, cli, "n1", ttl)
	granted := time.Now()
	lf, err := fencing.NewLeaseFencer(fencing.LeaseConfig{
		Leases: fencing.EtcdLeases{Client: cli}, Margin: margin, Poll: 100 * time.Millisecond, Logger: testlog.New(t, "lease"),
	})
	if err != nil {
		t.Fatal(err)
	}
	hooks := newStepHooks()
	c := newCoordinator(t, cli, session(t, cli), prefix, "n0", lf, hooks)
	runCoordinator(t, c)
	if _, err := c.Request(ctx, victim); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "recovery done", func() bool { return loadRecord(t, cli, prefix, victim).Done() })
	rec := loadRecord(t, cli, prefix, victim)
	fenced := rec.History[0].Finished
	if rec.History[0].Step != recovery.StepFence {
		t.Fatalf("first step %s", rec.History[0].Step)
	}
	if min := granted.Add(ttl*time.Second + margin); fenced.Before(min) {
		t.Fatalf("fenced %v after the grant, before TTL plus margin", fenced.Sub(granted))
	}
	t.Logf("lease-only fence finished %v after the victim's last renewal", fenced.Sub(granted))
}

// TestCoordinatorStepsDownWhenItIsTheVictim: when the others ask for the
// coordinator's own recovery it does not fence itself: it steps down and
// reports ErrSelfSuspected, and the next coordinator fences it.
func TestCoordinatorStepsDownWhenItIsTheVictim(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	hooks := newStepHooks()
	var fenced sync.Map
	fencer := fencing.FencerFunc(func(_ context.Context, v fencing.NodeRef) error {
		fenced.Store(v.String(), true)
		return nil
	})
	a := newCoordinator(t, cli, session(t, cli), prefix, "a", fencer, hooks)
	_, resA := runCoordinator(t, a)
	testutil.WaitFor(t, 20*time.Second, "a elected", a.Leading)
	b := newCoordinator(t, cli, session(t, cli), prefix, "b", fencer, hooks)
	runCoordinator(t, b)
	self := fencing.NodeRef{Name: "a", Incarnation: "self", Key: 7}
	if _, err := b.Request(ctx, self); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-resA:
		if !errors.Is(err, recovery.ErrSelfSuspected) {
			t.Fatalf("a ended with %v, want ErrSelfSuspected", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a did not step down")
	}
	testutil.WaitFor(t, 20*time.Second, "b recovers a", func() bool { return loadRecord(t, cli, prefix, self).Done() })
	if got := history(loadRecord(t, cli, prefix, self)); !strings.HasPrefix(got, "fence=b ") {
		t.Fatalf("history %q, want b to fence a", got)
	}
	// An incarnation with a pending recovery does not even campaign.
	_, prefix2 := etcdClient(t)
	c := newCoordinator(t, cli, session(t, cli), prefix2, "c", fencer, hooks)
	if _, err := c.Request(ctx, fencing.NodeRef{Name: "c", Incarnation: "self", Key: 9}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Run(rctx); !errors.Is(err, recovery.ErrSelfSuspected) {
		t.Fatalf("suspected incarnation's Run = %v, want ErrSelfSuspected", err)
	}
}

// TestCoordinatorStepsDownWhenFenced: a coordinator that finds its own
// key gone while fencing stops coordinating, and another one fences.
func TestCoordinatorStepsDownWhenFenced(t *testing.T) {
	ctx := context.Background()
	cli, prefix := etcdClient(t)
	hooks := newStepHooks()
	fencedSelf := fencing.FencerFunc(func(context.Context, fencing.NodeRef) error {
		return fmt.Errorf("leg0: %w", fencing.ErrFenced)
	})
	works := fencing.FencerFunc(func(context.Context, fencing.NodeRef) error { return nil })
	a := newCoordinator(t, cli, session(t, cli), prefix, "a", fencedSelf, hooks)
	_, resA := runCoordinator(t, a)
	testutil.WaitFor(t, 20*time.Second, "a elected", a.Leading)
	b := newCoordinator(t, cli, session(t, cli), prefix, "b", works, hooks)
	runCoordinator(t, b)
	victim := fencing.NodeRef{Name: "n1", Incarnation: "1", Key: 5}
	if _, err := b.Request(ctx, victim); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-resA:
		if !errors.Is(err, recovery.ErrSelfFenced) {
			t.Fatalf("a ended with %v, want ErrSelfFenced", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a did not step down")
	}
	testutil.WaitFor(t, 20*time.Second, "b recovers n1", func() bool { return loadRecord(t, cli, prefix, victim).Done() })
	if got := history(loadRecord(t, cli, prefix, victim)); !strings.HasPrefix(got, "fence=b ") {
		t.Fatalf("history %q", got)
	}
}
