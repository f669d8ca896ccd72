package recovery

import (
	"encoding/json"
	"fmt"
)

// Step is one step of the recovery order. Steps run strictly in order and
// a step starts only once the one before it is recorded as finished.
type Step int

// The recovery order from the design.
const (
	// StepNone: nothing finished yet; the recovery was only requested.
	StepNone Step = iota
	// StepFence cuts the victim off from storage.
	StepFence
	// StepRecordFence revokes the victim's lease and records the fence.
	StepRecordFence
	// StepResync merges the victim's write-intent bitmap, resyncs the
	// regions it marks and releases the victim's region locks: the legs
	// agree and every checksum area is recomputed from the data, so what
	// those locks protected (write ordering within a region, checksum
	// areas cached in the victim's memory) needs them no more. It comes
	// before the replay so that the survivors' own writes to those
	// regions stop waiting for the dead node before the replay needs what
	// those writers hold (their journals, their file locks), and so that
	// the replay reads the victim's journal as every leg will hold it.
	StepResync
	// StepReplayJournal replays the victim's journal.
	StepReplayJournal
	// StepReleaseLocks releases the victim's locks through the DLM's
	// recovery gating.
	StepReleaseLocks
	// StepDone records the recovery as finished.
	StepDone
)

var stepNames = [...]string{"none", "fence", "record-fence", "resync", "replay-journal", "release-locks", "done"}

// Steps lists the steps in order, from StepFence to StepDone.
func Steps() []Step {
	return []Step{StepFence, StepRecordFence, StepResync, StepReplayJournal, StepReleaseLocks, StepDone}
}

// String is the step's name as recorded in etcd.
func (s Step) String() string {
	if s < 0 || int(s) >= len(stepNames) {
		return fmt.Sprintf("step(%d)", int(s))
	}
	return stepNames[s]
}

// ParseStep is the inverse of String.
func ParseStep(name string) (Step, error) {
	for i, n := range stepNames {
		if n == name {
			return Step(i), nil
		}
	}
	return 0, fmt.Errorf("recovery: unknown step %q", name)
}

// MarshalJSON writes the step's name.
func (s Step) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads a step's name.
func (s *Step) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err != nil {
		return err
	}
	v, err := ParseStep(name)
	if err != nil {
		return err
	}
	*s = v
	return nil
}
