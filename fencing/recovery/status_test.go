package recovery_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// The ATTEMPTS column counts attempts as the history does: a step that
// succeeded at once shows 1 in both.
func TestTableAttemptsAgreeWithHistory(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := recovery.NewRecord(fencing.NewNodeRef("n1", "1", 7), "a", now)
	column := func(r recovery.Record) string {
		t.Helper()
		var b strings.Builder
		if err := recovery.WriteTable(&b, []recovery.Record{r}, now); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		head, row := strings.Fields(lines[0]), strings.Fields(lines[1])
		for i, h := range head {
			if h == "ATTEMPTS" {
				// SINCE takes two fields in the row ("TIME (AGE)").
				return row[i+1]
			}
		}
		t.Fatalf("no ATTEMPTS column:\n%s", b.String())
		return ""
	}
	if got := column(rec); got != "1" {
		t.Fatalf("first attempt at the fence shows %s attempts", got)
	}
	rec, err := rec.Fail(recovery.StepFence, "a", errors.New("agent failed"), now)
	if err != nil {
		t.Fatal(err)
	}
	if got := column(rec); got != "2" {
		t.Fatalf("after one failed fence the column shows %s, want 2 (the next attempt)", got)
	}
	for _, st := range []recovery.Step{recovery.StepFence, recovery.StepRecordFence, recovery.StepResync, recovery.StepReplayJournal, recovery.StepReleaseLocks, recovery.StepDone} {
		if rec, err = rec.Finish(st, "a", now); err != nil {
			t.Fatal(err)
		}
	}
	if !rec.Done() {
		t.Fatalf("record not done: %+v", rec)
	}
	last := rec.History[len(rec.History)-1]
	if got := column(rec); got != "1" || last.Attempts != 1 {
		t.Fatalf("done recovery: column %s, history of its last step %d", got, last.Attempts)
	}
	if rec.History[0].Attempts != 2 {
		t.Fatalf("history of the fence: %d attempts, want 2", rec.History[0].Attempts)
	}
}
