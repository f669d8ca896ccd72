package recovery

import (
	"fmt"
	"strings"
	"time"

	"github.com/shoal-ha/shoal/fencing"
)

// Record is the state of one node incarnation's recovery, kept in etcd
// under <prefix>/recovery/<node>/<incarnation>. The methods on Record are
// the deterministic core of the recovery order: they decide the next step
// and how a step's result changes the record, with no I/O.
type Record struct {
	Victim fencing.NodeRef `json:"victim"`
	// Finished is the last step recorded as finished.
	Finished Step `json:"finished"`
	// Requested is when the recovery was asked for, and by whom.
	Requested   time.Time `json:"requested"`
	RequestedBy string    `json:"requested_by,omitempty"`
	// Coordinator is the coordinator that last took the recovery on.
	Coordinator string `json:"coordinator,omitempty"`
	// StepSince is when work on the current step began: "since when".
	StepSince time.Time `json:"step_since"`
	// Updated is the time of the last change.
	Updated time.Time `json:"updated"`
	// Attempts counts failed attempts at the current step.
	Attempts int `json:"attempts,omitempty"`
	// LastError is the current step's last failure.
	LastError string `json:"last_error,omitempty"`
	// Waiting is what the current step waited for when it last reported,
	// having run longer than its bound (Config.StepReportAfter); cleared
	// when the step finishes or fails.
	Waiting []Wait `json:"waiting,omitempty"`
	// History lists the finished steps.
	History []StepRecord `json:"history,omitempty"`
}

// StepRecord is one finished step.
type StepRecord struct {
	Step        Step          `json:"step"`
	Finished    time.Time     `json:"finished"`
	Took        time.Duration `json:"took"`
	Attempts    int           `json:"attempts"`
	Coordinator string        `json:"coordinator"`
	// Outcome says what the step did, when its hook reported it.
	Outcome Outcome `json:"outcome,omitzero"`
}

// FenceRecord is written to <prefix>/fence/<node>/<incarnation> together
// with the record of StepRecordFence: the proof that the incarnation was
// cut off, which a returning node and the status tools read.
type FenceRecord struct {
	Victim      fencing.NodeRef `json:"victim"`
	Fenced      time.Time       `json:"fenced"`
	Coordinator string          `json:"coordinator"`
}

// NewRecord is the record of a freshly requested recovery.
func NewRecord(victim fencing.NodeRef, by string, now time.Time) Record {
	return Record{Victim: victim, Requested: now, RequestedBy: by, StepSince: now, Updated: now}
}

// ValidateVictim checks that victim can name a recovery record.
func ValidateVictim(victim fencing.NodeRef) error {
	if err := victim.Validate(); err != nil {
		return err
	}
	if strings.Contains(victim.Name, "/") || strings.Contains(victim.Incarnation, "/") {
		return fmt.Errorf("recovery: victim %q: name and incarnation must not contain '/'", victim.String())
	}
	return nil
}

// Done reports whether the recovery is finished.
func (r Record) Done() bool { return r.Finished >= StepDone }

// Next is the step to run now; StepDone once every step before it is
// finished (then Done reports true after it is recorded).
func (r Record) Next() Step {
	if r.Done() {
		return StepDone
	}
	return r.Finished + 1
}

// TakeOver marks coordinator as the one working on the recovery. The
// finished steps stay finished.
func (r Record) TakeOver(coordinator string, now time.Time) Record {
	if r.Coordinator != coordinator {
		r.Coordinator = coordinator
		r.Updated = now
	}
	return r
}

// Finish records step as finished. Only the next step may finish: this is
// what keeps recovery from going past the fence unfenced.
func (r Record) Finish(step Step, coordinator string, now time.Time) (Record, error) {
	return r.FinishWith(step, coordinator, Outcome{}, now)
}

// FinishWith is Finish with what the step did.
func (r Record) FinishWith(step Step, coordinator string, out Outcome, now time.Time) (Record, error) {
	if step != r.Next() || r.Done() {
		return r, fmt.Errorf("%w: %s finished, %s is next, got %s", ErrOutOfOrder, r.Finished, r.Next(), step)
	}
	r.History = append(append([]StepRecord(nil), r.History...), StepRecord{
		Step: step, Finished: now, Took: now.Sub(r.StepSince), Attempts: r.Attempts + 1, Coordinator: coordinator, Outcome: out,
	})
	r.Finished = step
	r.Coordinator = coordinator
	r.Attempts = 0
	r.LastError = ""
	r.Waiting = nil
	r.StepSince = now
	r.Updated = now
	return r, nil
}

// Fail records a failed attempt at step.
func (r Record) Fail(step Step, coordinator string, err error, now time.Time) (Record, error) {
	if step != r.Next() || r.Done() {
		return r, fmt.Errorf("%w: %s finished, %s is next, %s failed", ErrOutOfOrder, r.Finished, r.Next(), step)
	}
	r.Attempts++
	r.LastError = err.Error()
	r.Waiting = nil
	r.Coordinator = coordinator
	r.Updated = now
	return r, nil
}

// Report records what the running step waits for.
func (r Record) Report(step Step, coordinator string, waits []Wait, now time.Time) (Record, error) {
	if step != r.Next() || r.Done() {
		return r, fmt.Errorf("%w: %s finished, %s is next, %s reported", ErrOutOfOrder, r.Finished, r.Next(), step)
	}
	r.Waiting = append([]Wait(nil), waits...)
	r.Coordinator = coordinator
	r.Updated = now
	return r, nil
}

// Fence returns the fence record that StepRecordFence writes.
func (r Record) Fence(coordinator string, now time.Time) FenceRecord {
	fenced := now
	for _, h := range r.History {
		if h.Step == StepFence {
			fenced = h.Finished
		}
	}
	return FenceRecord{Victim: r.Victim, Fenced: fenced, Coordinator: coordinator}
}
