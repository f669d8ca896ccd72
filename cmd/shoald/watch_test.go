package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/keys"
)

func membersView(node string, ms ...keys.MemberRecord) cluster.MembersView {
	return cluster.MembersView{Node: node, Ready: true, Members: ms}
}

// TestClusterWatchTellsEachEventOnce drives the watch core through a
// failover: node3 dies, its recovery runs step by step, it comes back; each
// event is told once, in order, and nothing while nothing changes.
func TestClusterWatchTellsEachEventOnce(t *testing.T) {
	n1 := keys.MemberRecord{Name: "node1", Incarnation: "a"}
	n2 := keys.MemberRecord{Name: "node2", Incarnation: "b"}
	n3 := keys.MemberRecord{Name: "node3", Incarnation: "c"}
	n3again := keys.MemberRecord{Name: "node3", Incarnation: "d"}
	victim := fencing.NodeRef{Name: "node3", Incarnation: "c"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := recovery.Record{Victim: victim, Requested: t0, RequestedBy: "node1", Coordinator: "node1"}
	step := func(r recovery.Record, s recovery.Step, took time.Duration, o recovery.Outcome) recovery.Record {
		r.History = append(append([]recovery.StepRecord{}, r.History...), recovery.StepRecord{Step: s, Took: took, Outcome: o})
		r.Finished = s
		if r.Updated.IsZero() {
			r.Updated = t0
		}
		r.Updated = r.Updated.Add(took)
		return r
	}
	w := newClusterWatch()
	var got []string
	feed := func(via string, v cluster.MembersView, recs ...recovery.Record) {
		got = append(got, w.observe(via, v, recs)...)
	}
	feed("node1", membersView("node1", n1, n2, n3))
	feed("node1", membersView("node1", n1, n2, n3))
	feed("node1", membersView("node1", n1, n2))
	r1 := rec
	r1.LastError, r1.Attempts = "agent timed out", 1
	feed("node1", membersView("node1", n1, n2), r1)
	r := step(rec, recovery.StepFence, 2*time.Second, recovery.Outcome{Method: "lease"})
	feed("node1", membersView("node1", n1, n2), r)
	feed("node1", membersView("node1", n1, n2), r)
	r = step(r, recovery.StepRecordFence, 10*time.Millisecond, recovery.Outcome{})
	r = step(r, recovery.StepResync, 20*time.Millisecond, recovery.Outcome{Count: 2, Unit: "regions"})
	r = step(r, recovery.StepReplayJournal, 5*time.Millisecond, recovery.Outcome{Count: 3, Unit: "records"})
	feed("node2", membersView("node2", n1, n2), r)
	r = step(r, recovery.StepReleaseLocks, time.Millisecond, recovery.Outcome{Count: 1, Unit: "locks"})
	r = step(r, recovery.StepDone, 0, recovery.Outcome{})
	feed("node2", membersView("node2", n1, n2, n3again), r)
	feed("node2", membersView("node2", n1, n2, n3again), r)
	// node1 stops cleanly: node2's events say it left.
	v := membersView("node2", n2, n3again)
	v.Events = []cluster.TimedEvent{{Event: cluster.Event{Kind: cluster.NodeLeft, Member: n1}}}
	feed("node2", v, r)
	want := []string{
		"watching the cluster through node1: members node1, node2, node3",
		"node3 down (incarnation c: its lease ended)",
		"recovery of node3/c: requested by node1, coordinator node1",
		"recovery of node3/c: fence failing (attempt 1): agent timed out",
		"recovery of node3/c: fence done in 2s (lease)",
		"following the cluster through node2 now",
		"recovery of node3/c: record-fence done in 10ms",
		"recovery of node3/c: resync done in 20ms (2 regions)",
		"recovery of node3/c: replay-journal done in 5ms (3 records)",
		"node3 up (incarnation d)",
		"recovery of node3/c: release-locks done in 1ms (1 locks)",
		"recovery of node3/c: done in 2.036s",
		"node1 left (clean stop of incarnation a)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n%q\nwant\n%q", got, want)
	}
}
