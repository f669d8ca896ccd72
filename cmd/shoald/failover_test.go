package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	osexec "os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	_ "github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/node"
)

// volumeCluster is three shoald nodes sharing one mirrored volume.
type volumeCluster struct {
	*nodetest.Cluster
	legs []string
}

func newVolumeCluster(t *testing.T, legs []string, extra ...string) *volumeCluster {
	t.Helper()
	c := nodetest.NewVolumeCluster(t, legs, nodetest.Options{ExtraArgs: extra, LeaseTTL: testTTL})
	return &volumeCluster{Cluster: c, legs: legs}
}

func runBin(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := osexec.Command(nodetest.Binary(t, bin), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// write asks nd to write length bytes of pattern at off, repeat times.
func write(nd *nodetest.Node, off, length int64, pattern byte, repeat, intervalMS int) (node.WriteResult, error) {
	body, _ := json.Marshal(node.WriteRequest{Offset: off, Length: length, Pattern: pattern, Repeat: repeat, IntervalMS: intervalMS})
	client := nd.AdminClient(90 * time.Second)
	resp, err := client.Post(nd.AdminURL()+"/api/volume/write", "application/json", bytes.NewReader(body))
	var res node.WriteResult
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("%s: %s", resp.Status, raw)
	}
	return res, nil
}

func read(nd *nodetest.Node, off, length int64) ([]byte, error) {
	client := nd.AdminClient(10 * time.Second)
	resp, err := client.Get(fmt.Sprintf("%s/api/volume/read?offset=%d&length=%d", nd.AdminURL(), off, length))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, raw)
	}
	return raw, nil
}

func volumeStatus(t *testing.T, nd *nodetest.Node) mirror.Status {
	t.Helper()
	client := nd.AdminClient(10 * time.Second)
	resp, err := client.Get(nd.AdminURL() + "/api/volume")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st mirror.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("volume status of %s: %v", nd.Name, err)
	}
	return st
}

func recoveryOf(t *testing.T, nd *nodetest.Node, name, incarnation string) (recovery.Record, bool) {
	recs, err := recoveries(nd)
	if err != nil {
		return recovery.Record{}, false
	}
	return recoveryIn(recs, name, incarnation)
}

// pick returns a node that is neither the recovery coordinator nor the
// etcd leader's host, and another node that is not the coordinator.
func (vc *volumeCluster) pick(t *testing.T) (victim, waiter *nodetest.Node) {
	t.Helper()
	leader := etcdLeader(t, vc.Cluster, vc.Nodes[0])
	var coord *nodetest.Node
	vc.WaitFor(10*time.Second, "a coordinator", func() bool {
		for _, nd := range vc.Nodes {
			if v, err := nd.View(); err == nil && v.Coordinator {
				coord = nd
				return true
			}
		}
		return false
	})
	for _, nd := range vc.Nodes {
		if nd != coord && nd != leader && victim == nil {
			victim = nd
		}
	}
	for _, nd := range vc.Nodes {
		if nd != victim && nd != coord {
			waiter = nd
		}
	}
	if waiter == nil { // the coordinator hosts the leader: any other node waits
		for _, nd := range vc.Nodes {
			if nd != victim {
				waiter = nd
			}
		}
	}
	return victim, waiter
}

// recoveryDone waits until the recovery of name/incarnation is recorded
// done (its last record may land just after the waiter was granted).
func recoveryDone(t *testing.T, vc *volumeCluster, nd *nodetest.Node, name, incarnation string) recovery.Record {
	t.Helper()
	var rec recovery.Record
	vc.WaitFor(20*time.Second, "the recovery of "+name+" recorded done", func() bool {
		r, ok := recoveryOf(t, nd, name, incarnation)
		rec = r
		return ok && r.Done()
	})
	return rec
}

func checkStepsInOrder(t *testing.T, rec recovery.Record) {
	t.Helper()
	var got []string
	for _, h := range rec.History {
		got = append(got, h.Step.String())
	}
	var want []string
	for _, s := range recovery.Steps() {
		want = append(want, s.String())
	}
	if strings.Join(got, ",") != strings.Join(want[:len(got)], ",") || !rec.Done() {
		t.Fatalf("recovery steps %v, want all of %v in order", got, want)
	}
	t.Logf("recovery of %s: %s", rec.Victim, strings.Join(got, " -> "))
}

// keysOn reads the registered reservation keys of an iSCSI leg through a
// connection of the test's own.
func keysOn(t *testing.T, url string) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dev, err := blockdev.Open(ctx, url, blockdev.OpenOptions{})
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	defer dev.Close()
	keys, _, err := dev.(blockdev.Reservations).ReadKeys(ctx)
	if err != nil {
		t.Fatalf("read keys of %s: %v", url, err)
	}
	return keys
}

func TestKilledLockHolderIsFencedAndRecoveredInOrder(t *testing.T) {
	parallel(t)
	vc := newVolumeCluster(t, nodetest.ISCSILegs(t))
	victim, waiter := vc.pick(t)
	inc, _ := victim.Members()
	victimInc := inc[victim.Name]
	key := fencing.KeyFor(victim.Name, victimInc)
	for _, url := range vc.legs {
		if !containsKey(keysOn(t, url), key) {
			t.Fatalf("%s's key %x is not registered on %s", victim.Name, key, url)
		}
	}
	const off, length = 4 << 20, 1 << 20
	if res, err := write(victim, off, length, 0xAA, 1, 0); err != nil || res.Done != 1 {
		t.Fatalf("victim's write: %+v %v", res, err)
	}
	// The victim keeps its EX region lock cached after the write.
	victim.Kill()
	killed := time.Now()
	res, err := write(waiter, off, length, 0xBB, 1, 0)
	if err != nil || res.Done != 1 {
		t.Fatalf("waiter's write after the kill: %+v %v", res, err)
	}
	granted := time.Unix(0, res.Acked[0])
	t.Logf("SIGKILL of %s (holding an EX region lock) to %s's write under that lock: %s", victim.Name, waiter.Name, granted.Sub(killed).Round(time.Millisecond))
	rec := recoveryDone(t, vc, waiter, victim.Name, victimInc)
	checkStepsInOrder(t, rec)
	// The victim's region locks go at the end of the resync step, once
	// the legs agree (before the journal replay): the waiter's write may
	// not have been granted before that step began.
	for _, h := range rec.History {
		if h.Step != recovery.StepResync {
			continue
		}
		if began := h.Finished.Add(-h.Took); granted.Before(began) {
			t.Fatalf("waiter granted at %s, before the resync that releases the victim's region locks began (%s)", granted, began)
		}
		t.Logf("waiter granted %s after the resync began (it took %s)", granted.Sub(h.Finished.Add(-h.Took)).Round(time.Millisecond), h.Took.Round(time.Millisecond))
	}
	for _, url := range vc.legs {
		if containsKey(keysOn(t, url), key) {
			t.Fatalf("%s's key %x is still registered on %s after the fence", victim.Name, key, url)
		}
	}
	data, err := read(waiter, off, length)
	if err != nil || !bytes.Equal(data, bytes.Repeat([]byte{0xBB}, length)) {
		t.Fatalf("region does not hold the waiter's data (err %v)", err)
	}
}

func containsKey(keys []uint64, k uint64) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

// pausedWriter is the case fencing exists for: a node paused in the
// middle of writing under an EX lock wakes up after the cluster recovered
// it and another node wrote the same region. None of its late writes may
// reach the volume. leaseOnly says the legs cannot refuse a write (file
// legs): there a node paused between its self-fence check and the system
// call still issues that one write when it wakes (the documented gap,
// which only a watchdog closes). Its guard logs such a write; a late write
// that it did not log is a hole and fails the test.
func pausedWriter(t *testing.T, vc *volumeCluster, leaseOnly bool) {
	victim, waiter := vc.pick(t)
	inc, _ := victim.Members()
	victimInc := inc[victim.Name]
	const off, length = 8 << 20, 256 << 10
	type outcome struct {
		res node.WriteResult
		err error
	}
	victimDone := make(chan outcome, 1)
	go func() {
		res, err := write(victim, off, length, 0xAA, 5000, 2)
		victimDone <- outcome{res, err}
	}()
	// Let it write a while, then stop it in the middle of its loop.
	vc.WaitFor(10*time.Second, "the victim's first writes", func() bool {
		d, err := read(waiter, off, 4096)
		return err == nil && d[0] == 0xAA
	})
	victim.Pause()
	paused := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			victim.Cont()
		}
	}()
	res, err := write(waiter, off, length, 0xBB, 3, 0)
	if err != nil || res.Done != 3 {
		t.Fatalf("waiter's writes: %+v %v", res, err)
	}
	t.Logf("%s paused mid-write; %s wrote the region %s later", victim.Name, waiter.Name, time.Since(paused).Round(time.Millisecond))
	rec := recoveryDone(t, vc, waiter, victim.Name, victimInc)
	checkStepsInOrder(t, rec)
	victim.Cont()
	resumed = true
	woke := time.Now()
	var vo outcome
	select {
	case vo = <-victimDone:
	case <-time.After(60 * time.Second):
		t.Fatal("the woken victim's write loop did not end")
	}
	if vo.err != nil {
		t.Fatalf("victim's write request: %v", vo.err)
	}
	// A write issued before the pause may complete after the wake (its
	// data reached the legs before the fence; the waiter's writes came
	// later and overwrote it, which the data check below proves). A write
	// issued after the wake must never be acknowledged.
	for i, at := range vo.res.Started {
		if time.Unix(0, at).After(woke) {
			t.Fatalf("the woken victim issued a write at %s, after it woke at %s, and it was acknowledged at %s",
				time.Unix(0, at), woke, time.Unix(0, vo.res.Acked[i]))
		}
	}
	if vo.res.Error == "" {
		t.Fatalf("the woken victim's writes did not fail: %+v", vo.res)
	}
	t.Logf("the woken victim stopped after %d acknowledged writes: %s", vo.res.Done, vo.res.Error)
	// It comes back as a new incarnation.
	vc.WaitFor(30*time.Second, victim.Name+" back as a new incarnation", func() bool {
		m, err := waiter.Members()
		return err == nil && m[victim.Name] != "" && m[victim.Name] != victimInc
	})
	for _, nd := range vc.Nodes {
		data, err := read(nd, off, length)
		if err != nil {
			// The woken node may still be opening its volume.
			vc.WaitFor(30*time.Second, nd.Name+" to read the volume", func() bool {
				data, err = read(nd, off, length)
				return err == nil
			})
		}
		if !bytes.Equal(data, bytes.Repeat([]byte{0xBB}, length)) {
			if line := lateWriteLogged(victim, length); leaseOnly && line != "" {
				t.Skipf("%s reads data of the paused node's write that passed its self-fence check before the pause and was issued after the wake, as its log says (%s): the documented gap of lease-only fencing, so this run tells nothing more", nd.Name, line)
			}
			t.Fatalf("%s reads data that is not the waiter's: a late write reached the volume", nd.Name)
		}
	}
	// The fenced node's refused writes must not have failed a leg.
	st := volumeStatus(t, waiter)
	for _, l := range st.Legs {
		if l.State != mirror.LegInSync {
			t.Fatalf("leg %d is %s after the fenced node woke: a fenced node degraded the volume", l.Index, l.State)
		}
	}
	// Stop the nodes and check the legs agree block by block.
	for _, nd := range vc.Nodes {
		if err := nd.Stop(); err != nil {
			log := strings.Split(strings.TrimSpace(nd.Log()), "\n")
			t.Errorf("%s did not stop cleanly: %v; its log ends:\n%s", nd.Name, err, strings.Join(log[max(0, len(log)-40):], "\n"))
		}
	}
	if out, err := runBin(t, "shoalblk", append([]string{"check"}, vc.legs...)...); err != nil {
		t.Fatalf("shoalblk check after the paused writer: %v\n%s", err, out)
	}
}

// lateWriteLogged returns the line of nd's log where its volume guard
// reported a data write of length bytes that straddled its self-fence
// deadline (fencing.LateWriteMessage), or "".
func lateWriteLogged(nd *nodetest.Node, length int) string {
	for _, line := range strings.Split(nd.Log(), "\n") {
		if strings.Contains(line, fencing.LateWriteMessage) &&
			(strings.Contains(line, fmt.Sprintf("length=%d", length)) || strings.Contains(line, fmt.Sprintf(`"length":%d`, length))) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

func TestPausedWriterIsFencedByReservations(t *testing.T) {
	parallel(t)
	pausedWriter(t, newVolumeCluster(t, nodetest.ISCSILegs(t)), false)
}

func TestPausedWriterFindsItsDeadlinePassedOnFileLegs(t *testing.T) {
	parallel(t)
	pausedWriter(t, newVolumeCluster(t, nodetest.FileLegs(t)), true)
}
