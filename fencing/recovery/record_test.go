package recovery_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

func TestRecordOrderIsEnforced(t *testing.T) {
	rec := recovery.NewRecord(fencing.NewNodeRef("n1", "i", 1), "a", epoch)
	// Nothing may finish before the fence.
	for _, st := range recovery.Steps()[1:] {
		if _, err := rec.Finish(st, "a", epoch); !errors.Is(err, recovery.ErrOutOfOrder) {
			t.Fatalf("finishing %s before the fence: %v", st, err)
		}
	}
	now := epoch
	for i, st := range recovery.Steps() {
		if rec.Next() != st || rec.Done() {
			t.Fatalf("next %s, want %s", rec.Next(), st)
		}
		now = now.Add(time.Second)
		var err error
		if rec, err = rec.Finish(st, "a", now); err != nil {
			t.Fatal(err)
		}
		if len(rec.History) != i+1 || rec.History[i].Took != time.Second {
			t.Fatalf("history %+v", rec.History)
		}
		// A finished step cannot be finished again.
		if _, err := rec.Finish(st, "a", now); !errors.Is(err, recovery.ErrOutOfOrder) {
			t.Fatalf("finishing %s twice: %v", st, err)
		}
	}
	if !rec.Done() {
		t.Fatal("not done after every step")
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"finished":"done"`) || !strings.Contains(string(b), `"step":"replay-journal"`) {
		t.Fatalf("record JSON does not name steps: %s", b)
	}
	var back recovery.Record
	if err := json.Unmarshal(b, &back); err != nil || back.Finished != recovery.StepDone || len(back.History) != 6 || back.Victim != rec.Victim {
		t.Fatalf("round trip %+v %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"finished":"bogus"}`), &back); err == nil {
		t.Fatal("unknown step accepted")
	}
	if err := recovery.ValidateVictim(fencing.NewNodeRef("a/b", "i", 0)); err == nil {
		t.Fatal("slash in node name accepted")
	}
}
