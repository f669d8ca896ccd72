package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/node"
)

// recovered waits until the recovery of nd's incarnation inc is recorded
// done, as node `by` reads the records.
func recovered(t *testing.T, by *nodetest.InProcNode, name, inc string, timeout time.Duration) recovery.Record {
	t.Helper()
	var rec recovery.Record
	testutil.WaitFor(t, timeout, "recovery of "+name+"/"+inc+" done", func() bool {
		n := by.Node()
		recs, err := recovery.List(context.Background(), n.Cluster().Client(), n.Cluster().Config().Prefix())
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Victim.Name == name && r.Victim.Incarnation == inc && r.Done() {
				rec = r
				return true
			}
		}
		return false
	})
	return rec
}

func incarnation(t *testing.T, nd *nodetest.InProcNode) string {
	t.Helper()
	s := nd.Node().Cluster().Session()
	if s == nil {
		t.Fatalf("%s has no incarnation", nd.Name)
	}
	return s.Incarnation()
}

// TestKilledNodeIsRecoveredAndRejoins: the survivors see a killed node
// die, one of them coordinates its recovery through every step, and the
// node comes back as a new incarnation.
func TestKilledNodeIsRecoveredAndRejoins(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{})
	n1, n3 := c.Node("node1"), c.Node("node3")
	old := incarnation(t, n3)
	events := make(chan cluster.Event, 16)
	n1.Node().Cluster().Watcher().Subscribe(func(ev cluster.Event) { events <- ev })
	n3.Kill()
	c.WaitMembers(10*time.Second, 2, c.Nodes[:2]...)
	rec := recovered(t, n1, "node3", old, 20*time.Second)
	if len(rec.History) == 0 {
		t.Errorf("recovery record without history: %+v", rec)
	}
	sawDown := false
	for len(events) > 0 {
		if ev := <-events; ev.Kind == cluster.NodeDown && ev.Member.Name == "node3" {
			sawDown = true
		}
	}
	if !sawDown {
		t.Error("node1 saw no down event for node3")
	}
	n3.Start()
	c.WaitMembers(20*time.Second, 3, c.Nodes...)
	if inc := incarnation(t, n3); inc == old {
		t.Errorf("node3 came back with its old incarnation %s", inc)
	}
	testutil.WaitFor(t, 10*time.Second, "exactly one coordinator", func() bool {
		k := 0
		for _, nd := range c.Nodes {
			if nd.Node().IsCoordinator() {
				k++
			}
		}
		return k == 1
	})
}

// TestLockOfPartitionedHolderGoesToAnotherNode: a node cut off from etcd
// while it holds EX loses its lease and stops using the lock; after its
// recovery the lock goes to a waiter on another node, and the cut-off
// node, healed, rejoins as a new incarnation.
func TestLockOfPartitionedHolderGoesToAnotherNode(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{})
	n1, n2 := c.Node("node1"), c.Node("node2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d1, err := n1.Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held, err := d1.Acquire(ctx, dlm.Named("site"), dlm.EX)
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Use(); err != nil {
		t.Fatalf("fresh lock not usable: %v", err)
	}
	old := incarnation(t, n1)
	n1.Partition()
	d2, err := n2.Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := d2.Acquire(ctx, dlm.Named("site"), dlm.EX)
	if err != nil {
		t.Fatalf("node2 never got the lock: %v", err)
	}
	t.Logf("node2 got the lock %v after node1 was cut off", time.Since(start).Round(time.Millisecond))
	if err := held.Use(); err == nil {
		t.Fatal("node1 may still use its lock after node2 was granted it")
	}
	if got.Token() <= held.Token() {
		t.Errorf("fencing token did not grow: %v then %v", held.Token(), got.Token())
	}
	recovered(t, n2, "node1", old, 20*time.Second)
	got.Release()
	n1.Heal()
	c.WaitMembers(30*time.Second, 3, c.Nodes...)
	if inc := incarnation(t, n1); inc == old {
		t.Errorf("node1 kept its incarnation %s across the partition", inc)
	}
}

// TestVolumeWriterCutOffIsFencedAndItsRegionWritten: a node writes a
// region of the shared volume and is cut off from etcd; it stops writing
// once its lease cannot be trusted, and after its recovery another node
// writes the same region; every node then reads that node's data.
func TestVolumeWriterCutOffIsFencedAndItsRegionWritten(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{FileLegs: true})
	n1, n2, n3 := c.Node("node1"), c.Node("node2"), c.Node("node3")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	vol := func(nd *nodetest.InProcNode) interface {
		WriteAt(context.Context, []byte, int64) error
		ReadAt(context.Context, []byte, int64) error
	} {
		t.Helper()
		var v interface {
			WriteAt(context.Context, []byte, int64) error
			ReadAt(context.Context, []byte, int64) error
		}
		testutil.WaitFor(t, 20*time.Second, nd.Name+" has its volume open", func() bool {
			x, err := nd.Node().Volume()
			if err == nil {
				v = x
			}
			return err == nil
		})
		return v
	}
	a := bytes.Repeat([]byte{0xa1}, 64<<10)
	if err := vol(n1).WriteAt(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	old := incarnation(t, n1)
	v1 := vol(n1)
	n1.Partition()
	testutil.WaitFor(t, 10*time.Second, "node1 stops trusting its lease", func() bool { return !n1.Node().Cluster().Ready() })
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	err := v1.WriteAt(wctx, bytes.Repeat([]byte{0xee}, 4096), 0)
	wcancel()
	if err == nil {
		t.Fatal("node1 wrote the volume after it lost its lease")
	}
	b := bytes.Repeat([]byte{0xb2}, 64<<10)
	start := time.Now()
	if err := vol(n2).WriteAt(ctx, b, 0); err != nil {
		t.Fatalf("node2 could not write node1's region: %v", err)
	}
	t.Logf("node2 wrote node1's region %v after node1 lost its lease", time.Since(start).Round(time.Millisecond))
	recovered(t, n2, "node1", old, 20*time.Second)
	got := make([]byte, len(b))
	if err := vol(n3).ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b) {
		t.Fatalf("node3 reads %x... after node2's write, want %x...", got[:8], b[:8])
	}
	n1.Heal()
	c.WaitMembers(30*time.Second, 3, c.Nodes...)
	if err := vol(n1).ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("node1, back, reads %x... (%v), want %x...", got[:8], err, b[:8])
	}
}

// TestWriteRouteOnlyWithDebug: the fault-test write loop is not part of
// the production admin API.
func TestWriteRouteOnlyWithDebug(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 1, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	nd := c.Nodes[0]
	nd.Config.Admin.Debug = false
	nd.Start()
	c.WaitMembers(20*time.Second, 1, nd)
	post := func() int {
		t.Helper()
		resp, err := nd.AdminClient(30*time.Second).Post(nd.AdminURL()+"/api/volume/write", "application/json", strings.NewReader(`{"offset":0,"length":4096}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Fatalf("write route answered %d without admin.debug", code)
	}
	if err := nd.Stop(); err != nil {
		t.Fatal(err)
	}
	nd.Config.Admin.Debug = true
	nd.Start()
	c.WaitMembers(20*time.Second, 1, nd)
	testutil.WaitFor(t, 20*time.Second, "the debug write route writes", func() bool { return post() == http.StatusOK })
}

// TestStopIsBoundedWithoutEtcd: a node cut off from etcd stops within
// node.StopTimeout; what needs etcd is given up.
func TestStopIsBoundedWithoutEtcd(t *testing.T) {
	c := nodetest.NewInProcCluster(t, 1, nodetest.InProcOptions{})
	nd := c.Nodes[0]
	nd.Partition()
	start := time.Now()
	err := nd.Stop()
	if errors.Is(err, context.DeadlineExceeded) {
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		t.Fatalf("stop took longer than %s", time.Since(start))
	}
	t.Logf("stopped in %v without etcd", time.Since(start).Round(time.Millisecond))
}

// recordingPart records what the node does with it.
type recordingPart struct {
	name   string
	events chan string
}

func (p *recordingPart) Name() string { return p.name }
func (p *recordingPart) Start(ctx context.Context, inc node.Incarnation) error {
	if inc.Session == nil || inc.Locks == nil || inc.Volume == nil {
		p.events <- "start without session, locks or volume"
		return errors.New("incomplete incarnation")
	}
	p.events <- "start " + p.name
	return nil
}
func (p *recordingPart) Stop(clean bool) { p.events <- fmt.Sprintf("stop %s clean=%v", p.name, clean) }
func (p *recordingPart) Replay(ctx context.Context, victim fencing.NodeRef, inc node.Incarnation) error {
	p.events <- "replay " + p.name + " " + victim.Name
	return nil
}

// TestPartsStartInOrderAndReplayTheDead: parts given to Start run on every
// incarnation after the built-in ones, stop in reverse order, and the
// recovery coordinator's replay step hands them the dead incarnation.
func TestPartsStartInOrderAndReplayTheDead(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 2, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	evs := make([]chan string, 2)
	for i, nd := range c.Nodes {
		evs[i] = make(chan string, 64)
		nd.Parts = []node.Part{&recordingPart{"a", evs[i]}, &recordingPart{"b", evs[i]}}
		nd.Start()
	}
	c.WaitMembers(30*time.Second, 2, c.Nodes...)
	next := func(ch chan string) string {
		t.Helper()
		select {
		case e := <-ch:
			return e
		case <-time.After(20 * time.Second):
			t.Fatal("no event from the parts")
			return ""
		}
	}
	for i := range c.Nodes {
		if a, b := next(evs[i]), next(evs[i]); a != "start a" || b != "start b" {
			t.Fatalf("node%d parts started as %q, %q", i+1, a, b)
		}
	}
	// Kill cuts the node off and stops it: without quorum nothing can be
	// handed on, so its parts stop as after a lost lease.
	c.Nodes[1].Kill()
	if a, b := next(evs[1]), next(evs[1]); a != "stop b clean=false" || b != "stop a clean=false" {
		t.Fatalf("killed node's parts stopped as %q, %q", a, b)
	}
	if a, b := next(evs[0]), next(evs[0]); a != "replay a node2" || b != "replay b node2" {
		t.Fatalf("survivor replayed %q, %q", a, b)
	}
}

// blockingPart waits in Start until its context ends, as a part that
// waits for etcd would.
type blockingPart struct{ started chan struct{} }

func (p *blockingPart) Name() string { return "blocking" }
func (p *blockingPart) Start(ctx context.Context, inc node.Incarnation) error {
	close(p.started)
	<-ctx.Done()
	return ctx.Err()
}
func (p *blockingPart) Stop(bool) {}

// TestStopEndsAStartingIncarnation: a stop while an incarnation's parts
// are still starting (waiting for etcd, say) ends their start at once
// instead of waiting out the start timeout.
func TestStopEndsAStartingIncarnation(t *testing.T) {
	c := nodetest.NewInProcCluster(t, 1, nodetest.InProcOptions{NoStart: true})
	nd := c.Nodes[0]
	p := &blockingPart{started: make(chan struct{})}
	nd.Parts = []node.Part{p}
	nd.Start()
	select {
	case <-p.started:
	case <-time.After(20 * time.Second):
		t.Fatal("the part was never started")
	}
	start := time.Now()
	if err := nd.Stop(); err != nil {
		t.Fatal(err)
	}
	// The bound: the lease revoke (one request timeout, 2s in the fast
	// profile) and the rest, well under the 20s start timeout.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop took %v while a part was starting", d)
	}
}

// TestPausedNodeComesBackAsANewIncarnation: a node whose etcd traffic is
// frozen (as a paused process's is) is recovered by the others; when the
// traffic flows again, what it held is gone and it registers anew.
func TestPausedNodeComesBackAsANewIncarnation(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{})
	n1, n2 := c.Node("node1"), c.Node("node2")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d1, err := n1.Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held, err := d1.Acquire(ctx, dlm.Named("paused"), dlm.EX)
	if err != nil {
		t.Fatal(err)
	}
	old := incarnation(t, n1)
	n1.Pause()
	d2, err := n2.Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d2.Acquire(ctx, dlm.Named("paused"), dlm.EX)
	if err != nil {
		t.Fatalf("node2 never got the paused node's lock: %v", err)
	}
	recovered(t, n2, "node1", old, 20*time.Second)
	n1.Heal()
	if err := held.Use(); err == nil {
		t.Fatal("the paused node may still use its lock after waking up")
	}
	got.Release()
	c.WaitMembers(30*time.Second, 3, c.Nodes...)
	if inc := incarnation(t, n1); inc == old {
		t.Errorf("node1 kept its incarnation %s across the pause", inc)
	}
}

// unfinishedPart holds a lock of its own and, at a clean stop, says it
// left work only a recovery can finish (as the store does with committed
// blocks the volume would not take).
type unfinishedPart struct {
	recordingPart
	res dlm.Resource
}

func (p *unfinishedPart) Start(ctx context.Context, inc node.Incarnation) error {
	l, err := inc.Locks.Acquire(ctx, p.res, dlm.EX)
	if err != nil {
		return err
	}
	l.Release() // cached: the node keeps the grant
	return p.recordingPart.Start(ctx, inc)
}
func (p *unfinishedPart) LeftUnfinished() error { return errors.New("committed blocks not in place") }

// TestUnfinishedPartEndsTheIncarnationAsFailed: a part that reports, at a
// clean stop, work only a recovery can finish makes the node leave its
// locks and its lease to the others: they see it die (not leave), the
// lock it held stays orphaned until the recovery, and the recovery
// replays it.
func TestUnfinishedPartEndsTheIncarnationAsFailed(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 2, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	evs := make([]chan string, 2)
	res := dlm.Named("unfinished-part")
	for i, nd := range c.Nodes {
		evs[i] = make(chan string, 64)
		if i == 1 {
			nd.Parts = []node.Part{&unfinishedPart{recordingPart{"u", evs[i]}, res}}
		} else {
			nd.Parts = []node.Part{&recordingPart{"r", evs[i]}}
		}
		nd.Start()
	}
	c.WaitMembers(30*time.Second, 2, c.Nodes...)
	for i := range c.Nodes {
		select {
		case <-evs[i]:
		case <-time.After(20 * time.Second):
			t.Fatalf("node%d's part did not start", i+1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d1, err := c.Nodes[0].Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[1].Stop(); err != nil {
		t.Fatal(err)
	}
	// The lock stays the stopped node's (an orphan) until its recovery
	// has replayed it: the survivor's replay comes first.
	select {
	case e := <-evs[0]:
		if e != "replay r node2" {
			t.Fatalf("survivor's part: %q, want the replay of node2", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node2 was never recovered: its stop revoked the lease as a clean one")
	}
	l, err := d1.Acquire(ctx, res, dlm.EX)
	if err != nil {
		t.Fatalf("the lock after node2's recovery: %v", err)
	}
	l.Release()
}
