package dashboard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func observe(b *Board, s *story) Snapshot {
	return b.Observe(Read(context.Background(), s, s.Now()))
}

func nodeRow(t *testing.T, snap Snapshot, name string) NodeRow {
	t.Helper()
	for _, n := range snap.Nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("node %s not on the board: %+v", name, snap.Nodes)
	return NodeRow{}
}

// TestBoardFailoverStory drives the board through a node's death, each
// recovery step and its return, as the page shows them.
func TestBoardFailoverStory(t *testing.T) {
	s := newStory(t0)
	b := NewBoard(time.Hour)

	snap := observe(b, s)
	if len(snap.Nodes) != 3 {
		t.Fatalf("want 3 nodes, got %+v", snap.Nodes)
	}
	n1 := nodeRow(t, snap, "node1")
	if n1.State != StateUp || !n1.Coordinator || !n1.EtcdLeader || !n1.Self || n1.LeaseLeftMS != 1700 {
		t.Fatalf("node1 row: %+v", n1)
	}
	if n2 := nodeRow(t, snap, "node2"); n2.State != StateUp || n2.LeaseLeftMS != 2000 || n2.Self || n2.Coordinator {
		t.Fatalf("node2 row: %+v", n2)
	}
	if !snap.Etcd.Healthy || snap.Etcd.Leader != "node1" || len(snap.Etcd.Members) != 3 || !snap.Etcd.Members[1].Live {
		t.Fatalf("etcd row: %+v", snap.Etcd)
	}

	s.advance(2 * time.Second)
	s.kill("node2")
	snap = observe(b, s)
	n2 := nodeRow(t, snap, "node2")
	if n2.State != StateDown || n2.LeaseLeftMS != 0 || !n2.Since.Equal(s.Now()) {
		t.Fatalf("killed node2: %+v", n2)
	}
	if snap.Etcd.Members[1].Live {
		t.Fatalf("node2's etcd member still shown live: %+v", snap.Etcd.Members)
	}
	if snap.Locks.Orphans != 1 || snap.Locks.Held["EX"] != 1 || snap.Locks.Waiters != 1 {
		t.Fatalf("locks after the death: %+v", snap.Locks)
	}

	v := s.request("node2")
	s.advance(300 * time.Millisecond)
	snap = observe(b, s)
	if n2 := nodeRow(t, snap, "node2"); n2.State != StateRecovering || n2.Step != "fence" {
		t.Fatalf("node2 while fencing: %+v", n2)
	}
	if len(snap.Recoveries) != 1 || snap.Recoveries[0].Steps[0].State != StepRunning || snap.Recoveries[0].Steps[0].TookMS != 300 {
		t.Fatalf("recovery while fencing: %+v", snap.Recoveries)
	}
	for _, want := range recovery.Steps() {
		s.advance(100 * time.Millisecond)
		if got := s.finish(v); got != want {
			t.Fatalf("finished %s, want %s", got, want)
		}
		snap = observe(b, s)
		r := snap.Recoveries[0]
		for i, st := range r.Steps {
			wantState := StepPending
			switch {
			case recovery.Step(i+1) <= want:
				wantState = StepFinished
			case recovery.Step(i+1) == want+1:
				wantState = StepRunning
			}
			if st.State != wantState {
				t.Fatalf("after %s: step %s is %s, want %s", want, st.Name, st.State, wantState)
			}
		}
		if r.Done != (want == recovery.StepDone) {
			t.Fatalf("after %s: done=%v", want, r.Done)
		}
	}
	r := snap.Recoveries[0]
	if r.ID != "node2/node2-a" || r.Steps[0].TookMS != 400 || r.Steps[1].TookMS != 100 || r.TookMS != 900 {
		t.Fatalf("finished recovery: %+v", r)
	}
	if n2 := nodeRow(t, snap, "node2"); n2.State != StateRecovered {
		t.Fatalf("node2 after recovery: %+v", n2)
	}
	if snap.Locks.Orphans != 0 {
		t.Fatalf("orphans after release: %+v", snap.Locks)
	}

	s.advance(time.Second)
	s.rejoin("node2", "node2-b")
	snap = observe(b, s)
	if n2 := nodeRow(t, snap, "node2"); n2.State != StateUp || n2.Incarnation != "node2-b" {
		t.Fatalf("node2 back: %+v", n2)
	}
	// The availability series shows the dip: every sample fell in one
	// 10 s bucket, which keeps the fewest live members.
	if len(snap.Availability) != 1 || snap.Availability[0].Up != 2 || snap.Availability[0].Known != 3 {
		t.Fatalf("availability: %+v", snap.Availability)
	}
}

func TestBoardAvailabilityWindow(t *testing.T) {
	s := newStory(t0)
	b := NewBoard(time.Hour)
	for i := 0; i < 400; i++ {
		observe(b, s)
		s.advance(10 * time.Second)
	}
	snap := observe(b, s)
	if n := len(snap.Availability); n != availabilityBuckets+1 {
		t.Fatalf("%d points kept, want %d", n, availabilityBuckets+1)
	}
	if first := snap.Availability[0].Time; s.Now().Sub(first) > time.Hour {
		t.Fatalf("oldest point %s is older than the window", first)
	}
}

func TestBoardTrafficRates(t *testing.T) {
	s := newStory(t0)
	b := NewBoard(time.Hour)
	s.traffic = []TrafficCounters{{Node: "node1", Requests: 1000, Errors: 10, P99: 12500 * time.Microsecond}}
	snap := observe(b, s)
	if len(snap.Traffic) != 1 || snap.Traffic[0].RequestsPerSecond != 0 || snap.Traffic[0].P99MS != 12.5 {
		t.Fatalf("first reading: %+v", snap.Traffic)
	}
	s.advance(2 * time.Second)
	s.traffic = []TrafficCounters{{Node: "node1", Requests: 1400, Errors: 14, P99: time.Millisecond}}
	snap = observe(b, s)
	if tr := snap.Traffic[0]; tr.RequestsPerSecond != 200 || tr.ErrorsPerSecond != 2 {
		t.Fatalf("rates: %+v", tr)
	}
	// A restarted web tier starts its counters again: no rate, no
	// negative figure.
	s.advance(time.Second)
	s.traffic = []TrafficCounters{{Node: "node1", Requests: 5, Errors: 0}}
	snap = observe(b, s)
	if tr := snap.Traffic[0]; tr.RequestsPerSecond != 0 || tr.ErrorsPerSecond != 0 {
		t.Fatalf("after a restart: %+v", tr)
	}
}

func TestBoardVolumeAndLocks(t *testing.T) {
	s := newStory(t0)
	snap := observe(NewBoard(time.Hour), s)
	v := snap.Volume
	if v == nil || v.Regions != 256 || v.DirtyRegions != 12 || len(v.Legs) != 2 {
		t.Fatalf("volume: %+v", v)
	}
	if v.Legs[0].Resync != 1 || v.Legs[1].Resync != 0.25 || v.Legs[1].State != "resyncing" {
		t.Fatalf("legs: %+v", v.Legs)
	}
	l := snap.Locks
	if l.Resources != 2 || l.Held["PR"] != 1 || l.Held["EX"] != 1 || l.Waiters != 1 || l.Check != "ok" {
		t.Fatalf("locks: %+v", l)
	}
}

// TestBoardProblems: parts that cannot be read are named, the rest still
// shows.
func TestBoardProblems(t *testing.T) {
	snap := NewBoard(time.Hour).Observe(Read(context.Background(), broken{}, t0))
	if snap.Locks != nil || snap.Volume != nil || snap.Etcd.Healthy {
		t.Fatalf("broken source shown as healthy: %+v", snap)
	}
	all := strings.Join(snap.Problems, "\n")
	for _, want := range []string{"etcd members:", "locks:", "recoveries:", "volume:"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q: %q", want, snap.Problems)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Source") {
		t.Fatalf("no source: %v", err)
	}
	cfg.Source = broken{}
	cfg.Interval = time.Millisecond
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Interval") {
		t.Fatalf("tiny interval: %v", err)
	}
	cfg = DefaultConfig()
	cfg.Source = broken{}
	cfg.Window = time.Minute
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Window") {
		t.Fatalf("short window: %v", err)
	}
}

// A recovery under way is listed before the finished ones, whatever its
// age; the finished ones follow newest first.
func TestRecoveriesRunningFirstThenNewest(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
	rec := func(name string, requested time.Time, done bool) recovery.Record {
		r := recovery.Record{Victim: fencing.NewNodeRef(name, "1", 1), Requested: requested, Updated: requested.Add(time.Second), StepSince: requested}
		if done {
			r.Finished = recovery.StepDone
		}
		return r
	}
	recs := []recovery.Record{
		rec("old-done", t0, true),
		rec("stuck", t0.Add(time.Minute), false),
		rec("new-done", t0.Add(3*time.Minute), true),
		rec("mid-done", t0.Add(2*time.Minute), true),
	}
	rows := recoveryRows(recs, t0.Add(5*time.Minute))
	var got []string
	for _, r := range rows {
		got = append(got, r.Victim)
	}
	if want := "stuck new-done mid-done old-done"; strings.Join(got, " ") != want {
		t.Fatalf("recoveries listed %v, want %s", got, want)
	}
}
