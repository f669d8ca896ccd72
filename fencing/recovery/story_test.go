package recovery_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// TestStoryTellsAFailoverOnce: every step is told once, in order, with the
// recovery ID, its duration and what it did, however often the record is
// seen and whichever coordinator finished it.
func TestStoryTellsAFailoverOnce(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info, DisableTime: true})
	var doneAfter time.Duration
	s := recovery.NewStory(log, func(rec recovery.Record, d time.Duration) { doneAfter = d })

	victim := fencing.NewNodeRef("node2", "inc7", 42)
	now := epoch
	s.Suspected(victim, "lease expired", now.Add(-time.Second))
	s.Suspected(victim, "no heartbeat", now) // told once
	rec := recovery.NewRecord(victim, "node1/a", now)
	s.Observe(rec)
	outcomes := map[recovery.Step]recovery.Outcome{
		recovery.StepFence:         {Method: "reservations+lease"},
		recovery.StepResync:        {Count: 37, Unit: "regions"},
		recovery.StepReplayJournal: {Count: 412, Unit: "records"},
		recovery.StepReleaseLocks:  {Count: 5, Unit: "locks"},
	}
	for i, step := range recovery.Steps() {
		now = now.Add(time.Duration(i+1) * 100 * time.Millisecond)
		coord := "node1/a"
		if step >= recovery.StepReplayJournal {
			coord = "node3/b" // a new coordinator finishes it
		}
		var err error
		if rec, err = rec.FinishWith(step, coord, outcomes[step], now); err != nil {
			t.Fatal(err)
		}
		s.Observe(rec)
		s.Observe(rec)
	}
	got := buf.String()
	want := []string{
		`failover: suspected: recovery=node2/inc7 how="lease expired"`,
		`failover: fenced: recovery=node2/inc7 took=100ms coordinator=node1/a how="reservations+lease"`,
		`failover: lease revoked, fence recorded: recovery=node2/inc7 took=200ms`,
		`failover: resynced: recovery=node2/inc7 took=300ms coordinator=node1/a regions=37`,
		`failover: journal replayed: recovery=node2/inc7 took=400ms coordinator=node3/b records=412`,
		`failover: locks released: recovery=node2/inc7 took=500ms coordinator=node3/b locks=5`,
		`failover: done: recovery=node2/inc7 took=2.1s since_suspected=3.1s coordinator=node3/b`,
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), got)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d:\n got %s\nwant %s", i, lines[i], w)
		}
	}
	if doneAfter != 3100*time.Millisecond {
		t.Fatalf("death to service %s", doneAfter)
	}
}

// TestStoryJoinsLate: a node that first sees a recovery half done tells
// the finished steps at once, starting from the request.
func TestStoryJoinsLate(t *testing.T) {
	var buf bytes.Buffer
	s := recovery.NewStory(hclog.New(&hclog.LoggerOptions{Output: &buf, DisableTime: true}), nil)
	rec := recovery.NewRecord(fencing.NewNodeRef("node2", "i", 1), "node3/c", epoch)
	rec, _ = rec.Finish(recovery.StepFence, "node1/a", epoch.Add(time.Second))
	rec, _ = rec.Finish(recovery.StepRecordFence, "node1/a", epoch.Add(2*time.Second))
	s.Observe(rec)
	got := buf.String()
	for _, w := range []string{`how="recovery requested by node3/c"`, "failover: fenced", "how=unreported", "failover: lease revoked"} {
		if !strings.Contains(got, w) {
			t.Errorf("story lacks %q:\n%s", w, got)
		}
	}
	if strings.Contains(got, "journal") {
		t.Errorf("told a step that has not finished:\n%s", got)
	}
}

// TestStoryRecallsEndedFailovers: a node that starts and finds a finished
// recovery's record says nothing of it and does not count it; a recovery
// it finds half done is told from the request, and a record it recalled
// is told from where it ended.
func TestStoryRecallsEndedFailovers(t *testing.T) {
	var buf bytes.Buffer
	dones := 0
	s := recovery.NewStory(hclog.New(&hclog.LoggerOptions{Output: &buf, DisableTime: true}), func(recovery.Record, time.Duration) { dones++ })
	ended := recovery.NewRecord(fencing.NewNodeRef("node1", "old", 1), "node2/a", epoch)
	now := epoch
	for _, step := range recovery.Steps() {
		now = now.Add(100 * time.Millisecond)
		var err error
		if ended, err = ended.Finish(step, "node2/a", now); err != nil {
			t.Fatal(err)
		}
	}
	if !ended.Done() {
		t.Fatal("record not done after every step")
	}
	s.Recall(ended)
	s.Observe(ended) // the same record again, from a watch
	if buf.Len() != 0 || dones != 0 {
		t.Fatalf("an ended failover told again (%d done callbacks):\n%s", dones, buf.String())
	}

	half := recovery.NewRecord(fencing.NewNodeRef("node3", "i", 2), "node2/a", epoch)
	half, _ = half.Finish(recovery.StepFence, "node2/a", epoch.Add(time.Second))
	s.Recall(half)
	if buf.Len() != 0 {
		t.Fatalf("a recalled record told:\n%s", buf.String())
	}
	half, _ = half.Finish(recovery.StepRecordFence, "node2/a", epoch.Add(2*time.Second))
	s.Observe(half)
	got := buf.String()
	if !strings.Contains(got, "failover: lease revoked") || strings.Contains(got, "failover: fenced") || strings.Contains(got, "suspected") {
		t.Fatalf("after the recall, want only the step that followed:\n%s", got)
	}
}
