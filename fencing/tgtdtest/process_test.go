package tgtdtest_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// child is a node process: this test binary run in a child mode.
type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	mu    sync.Mutex
	all   []string
	exit  chan error
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = childEnv(env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, lines: make(chan string, 1<<16), exit: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.mu.Lock()
			c.all = append(c.all, sc.Text())
			c.mu.Unlock()
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		c.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		// Stop only this child, by its PID, whatever state it is in.
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-c.exit:
		case <-time.After(10 * time.Second):
			t.Errorf("child %d did not exit", cmd.Process.Pid)
		}
	})
	return c
}

// waitLine waits for a line starting with prefix and returns it.
func (c *child) waitLine(prefix string) string {
	c.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, "error") {
				c.t.Fatalf("child: %s", l)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			c.t.Fatalf("child never printed %q; output:\n%s", prefix, c.output())
		}
	}
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.all, "\n")
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) waitStopped() {
	c.t.Helper()
	testutil.WaitFor(c.t, 10*time.Second, fmt.Sprintf("child %d to stop", c.pid()), func() bool { return processState(c.pid()) == "T" })
}

func (c *child) waitExit() {
	c.t.Helper()
	select {
	case err := <-c.exit:
		c.exit <- err // for the cleanup
		if err != nil {
			c.t.Fatalf("child exited with %v; output:\n%s", err, c.output())
		}
	case <-time.After(30 * time.Second):
		c.t.Fatalf("child did not finish; output:\n%s", c.output())
	}
}

// writesAfter lists the child's write reports after the line marker.
func (c *child) writesAfter(marker string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.all, marker)
	if i < 0 {
		return nil
	}
	var out []string
	for _, l := range c.all[i+1:] {
		if strings.HasPrefix(l, "write ") {
			out = append(out, l)
		}
	}
	return out
}

// survivorAndVictim starts two tgtd legs, opens and registers the
// survivor node n0 on them, and starts victim as a child process that
// registers and writes on the same legs.
func survivorAndVictim(ctx context.Context, t *testing.T, victim fencing.NodeRef) ([]*tgtrig.Target, *node, *child) {
	legs := startLegs(t, 2)
	survivor := openNode(t, legs, fencing.NewNodeRef("n0", "1", 0))
	if err := survivor.fencer.Join(ctx); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, l := range legs {
		urls = append(urls, l.URL(1))
	}
	c := startChild(t, envChild, "pr", envLegs, strings.Join(urls, ","), envName, victim.Name, envInc, victim.Incarnation)
	return legs, survivor, c
}

// TestPausedWriterProcessOnTgtd: a node process is SIGSTOPped at an
// arbitrary point of its write loop on two tgtd legs, fenced, and the
// region is written by the survivor; after SIGCONT every one of its
// writes is refused by the targets and the legs keep the survivor's data.
func TestPausedWriterProcessOnTgtd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	victim := fencing.NewNodeRef("n1", "1", 0)
	legs, survivor, c := survivorAndVictim(ctx, t, victim)
	c.waitLine("ready")
	c.waitLine("write 3 ok")

	if err := syscall.Kill(c.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.waitStopped()
	start := time.Now()
	if err := survivor.fencer.Fence(ctx, victim); err != nil {
		t.Fatalf("fence: %v", err)
	}
	t.Logf("stopped writer fenced on %d tgtd legs in %v", len(legs), time.Since(start))
	for i, d := range survivor.devs {
		if err := d.WriteAt(ctx, block('S'), 0); err != nil {
			t.Fatalf("survivor write leg %d: %v", i, err)
		}
	}
	if err := syscall.Kill(c.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.waitLine("fenced")
	c.waitExit()
	got := make([]byte, 4096)
	for i, d := range survivor.devs {
		if err := d.ReadAt(ctx, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, block('S')) {
			t.Fatalf("leg %d holds %q...: a late write of the fenced node reached it; child output:\n%s", i, got[:8], c.output())
		}
	}
}

// TestKilledNodeIsFencedOnTgtd: a node process holding its registration
// is SIGKILLed; fencing it leaves its key on no leg.
func TestKilledNodeIsFencedOnTgtd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	victim := fencing.NewNodeRef("n2", "7", 0)
	_, survivor, c := survivorAndVictim(ctx, t, victim)
	c.waitLine("write 1 ok")
	if err := syscall.Kill(c.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := survivor.fencer.Fence(ctx, victim); err != nil {
		t.Fatalf("fence: %v", err)
	}
	t.Logf("killed node fenced in %v", time.Since(start))
	for i, d := range survivor.devs {
		keys, _, err := d.ReadKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(keys, victim.Key) {
			t.Fatalf("leg %d still has the killed node's key", i)
		}
		if err := d.WriteAt(ctx, block('S'), 0); err != nil {
			t.Fatalf("survivor write leg %d: %v", i, err)
		}
	}
}

// TestPausedWriterProcessLeaseOnly: lease-only mode over file legs. The
// node process stops (SIGSTOP) between two writes and stays stopped past
// its lease; the coordinator waits out the lease plus the margin, the
// survivor writes the region, and the node, woken, finds its deadline
// passed and writes nothing.
//
// The child stops itself between writes on purpose: a pause that falls
// between a write's deadline check and its system call lets that one
// write through on waking, a window lease-only mode cannot close (the
// targets of reservation fencing do close it).
func TestPausedWriterProcessLeaseOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	var paths []string
	var devs []blockdev.Device
	for i := range 2 {
		p := filepath.Join(dir, fmt.Sprintf("leg%d.img", i))
		d, err := blockdev.Open(ctx, p, blockdev.OpenOptions{Create: true, CreateSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		paths = append(paths, p)
		devs = append(devs, d)
	}
	cluster, err := etcdtest.Start(filepath.Join(dir, "etcd"), 1, etcdtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cli := cluster.NewClient(t)

	const ttl = 2
	const margin = 500 * time.Millisecond
	c := startChild(t, envChild, "lease", envLegs, strings.Join(paths, ","), envName, "n1", envInc, "1",
		envEtcd, strings.Join(cluster.Endpoints, ","), envTTL, strconv.Itoa(ttl), envMargin, margin.String(), envPause, "5")
	ready := c.waitLine("ready lease=")
	leaseID, err := strconv.ParseInt(strings.TrimPrefix(ready, "ready lease="), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	c.waitLine("pausing")
	c.waitStopped()
	paused := time.Now()

	lf, err := fencing.NewLeaseFencer(fencing.LeaseConfig{Leases: fencing.EtcdLeases{Client: cli}, Margin: margin, Poll: 100 * time.Millisecond, Logger: testlog.New(t, "lease")})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	cfg := recovery.DefaultConfig()
	cfg.Name = "n0/1"
	cfg.Fencer = lf
	cfg.Hooks = recovery.HookFuncs{}
	cfg.Logger = testlog.New(t, "coordinator")
	coord, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: cli, Lease: recovery.SessionLease(sess), Prefix: "/shoal", Self: fencing.NodeRef{Name: "n0", Incarnation: "1"}, Engine: cfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- coord.Run(runCtx) }()
	defer func() { stop(); <-done }()
	victim := fencing.NewNodeRef("n1", "1", leaseID)
	if _, err := coord.Request(ctx, victim); err != nil {
		t.Fatal(err)
	}
	testutil.WaitForNil(t, 60*time.Second, "the recovery to finish", func() error {
		rec, ok, err := recovery.NewEtcdStore(cli, "/shoal", nil).Load(ctx, victim)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || !rec.Done() {
			return fmt.Errorf("recovery not done: %+v", rec)
		}
		return nil
	})
	if took := time.Since(paused); took < ttl*time.Second {
		t.Fatalf("lease-only recovery done %v after the pause, before the lease could expire", took)
	} else {
		t.Logf("lease-only recovery done %v after the writer stopped (TTL %ds, margin %v)", took, ttl, margin)
	}
	for i, d := range devs {
		if err := d.WriteAt(ctx, block('S'), 0); err != nil {
			t.Fatalf("survivor write leg %d: %v", i, err)
		}
	}
	if err := syscall.Kill(c.pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.waitLine("self-fenced")
	c.waitExit()
	if late := c.writesAfter("pausing"); len(late) != 1 || !strings.Contains(late[0], "refused on 2 legs") {
		t.Fatalf("writes after waking: %v", late)
	}
	got := make([]byte, 4096)
	for i, d := range devs {
		if err := d.ReadAt(ctx, got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, block('S')) {
			t.Fatalf("leg %d holds %q...: the woken node wrote", i, got[:8])
		}
	}
}

// TestCoordinatorProcessKilledBetweenSteps: the coordinator process is
// SIGKILLed after the resync, in the middle of the journal replay;
// once its session lease expires another node is elected, resumes at the
// journal replay, and no finished step's effect happens twice.
func TestCoordinatorProcessKilledBetweenSteps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	cluster, err := etcdtest.Start(filepath.Join(dir, "etcd"), 1, etcdtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cli := cluster.NewClient(t)
	effects := filepath.Join(dir, "effects")
	const prefix = "/shoal"
	const ttl = 2

	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	victim := fencing.NewNodeRef("n9", "1", int64(lease.ID))
	a := startChild(t, envChild, "coord", envName, "a", envEtcd, strings.Join(cluster.Endpoints, ","),
		envPrefix, prefix, envLog, effects, envHold, "replay-journal", envTTL, strconv.Itoa(ttl))
	a.waitLine("elected")

	// b: this process, waiting in the election.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	hooks := effectHooks{path: effects, who: "b"}
	cfg := recovery.DefaultConfig()
	cfg.Name = "b"
	cfg.Fencer = hooks
	cfg.Hooks = hooks
	cfg.Logger = testlog.New(t, "b")
	b, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: cli, Lease: recovery.SessionLease(sess), Prefix: prefix, Self: fencing.NodeRef{Name: "b", Incarnation: "1"}, Engine: cfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	defer func() { stop(); <-done }()

	if _, err := b.Request(ctx, victim); err != nil {
		t.Fatal(err)
	}
	a.waitLine("holding replay-journal")
	if b.Leading() {
		t.Fatal("b elected while a leads")
	}
	if err := syscall.Kill(a.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	store := recovery.NewEtcdStore(cli, prefix, nil)
	var rec recovery.Record
	testutil.WaitForNil(t, 60*time.Second, "the recovery to finish", func() error {
		r, ok, err := store.Load(ctx, victim)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || !r.Done() {
			return fmt.Errorf("recovery not finished: %+v", r)
		}
		rec = r
		return nil
	})
	t.Logf("recovery finished %v after the coordinator was killed (session TTL %ds)", time.Since(killed), ttl)
	var hist []string
	for _, h := range rec.History {
		hist = append(hist, h.Step.String()+"="+h.Coordinator)
	}
	if want := "fence=a record-fence=a resync=a replay-journal=b release-locks=b done=b"; strings.Join(hist, " ") != want {
		t.Fatalf("history %q, want %q", strings.Join(hist, " "), want)
	}
	b2, err := os.ReadFile(effects)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b2)), "\n")
	want := []string{"fence n9 a", "resync n9 a", "replay-journal n9 b", "release-locks n9 b"}
	if !slices.Equal(got, want) {
		t.Fatalf("effects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r, err := cli.TimeToLive(ctx, lease.ID); err != nil || r.TTL > 0 {
		t.Fatalf("victim lease not revoked: ttl %d, %v", r.TTL, err)
	}
}
