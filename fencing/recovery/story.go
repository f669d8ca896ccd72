package recovery

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/fencing"
)

// Story tells each failover in a node's log as one story under one
// recovery ID (victim/incarnation): suspected, fenced (how), lease
// revoked, journal replayed (how many records), resynced (how many
// regions), locks released (how many), done; each line with its step's
// duration. Every node runs one and feeds it every recovery record it
// sees (the coordinator's saves, or a watch of the records), so every
// survivor's log tells the same story, whoever coordinated.
//
// Story is the deterministic part: it compares each record with the last
// one it saw for that recovery and logs what is new, at most once per
// step. It is safe for concurrent use.
type Story struct {
	log hclog.Logger
	// onDone, when set, sees every recovery this node saw finish, with
	// the time from the moment this node first knew the victim dead (its
	// own suspicion, or else the recovery's request) to the done record.
	onDone func(rec Record, deathToService time.Duration)

	mu   sync.Mutex
	seen map[string]*told
}

type told struct {
	suspected time.Time
	said      bool // the suspicion line is out
	finished  Step
}

// NewStory returns a story teller that writes to log; onDone may be nil.
func NewStory(log hclog.Logger, onDone func(rec Record, deathToService time.Duration)) *Story {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Story{log: log, onDone: onDone, seen: map[string]*told{}}
}

func (s *Story) entry(id string) *told {
	t, ok := s.seen[id]
	if !ok {
		t = &told{}
		s.seen[id] = t
	}
	return t
}

// Suspected starts the story of victim: this node saw it die at at, for
// the reason how ("lease expired", "no heartbeat for 400ms"). A second
// call for the same incarnation changes nothing.
func (s *Story) Suspected(victim fencing.NodeRef, how string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.entry(victim.String())
	if t.said {
		return
	}
	t.said, t.suspected = true, at
	s.log.Info("failover: suspected", "recovery", victim.String(), "how", how)
}

// Observe tells what rec says that this node has not told yet.
func (s *Story) Observe(rec Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := rec.Victim.String()
	t := s.entry(id)
	if !t.said {
		t.said, t.suspected = true, rec.Requested
		by := rec.RequestedBy
		if by == "" {
			by = "unknown"
		}
		s.log.Info("failover: suspected", "recovery", id, "how", "recovery requested by "+by)
	}
	for _, h := range rec.History {
		if h.Step <= t.finished {
			continue
		}
		t.finished = h.Step
		s.tellStep(id, rec, h)
	}
}

func (s *Story) tellStep(id string, rec Record, h StepRecord) {
	kv := []any{"recovery", id, "took", h.Took.Round(time.Millisecond), "coordinator", h.Coordinator}
	if h.Attempts > 1 {
		kv = append(kv, "attempts", h.Attempts)
	}
	o := h.Outcome
	count := func(unit string) []any {
		if o.Unit != "" {
			unit = o.Unit
		}
		return []any{unit, o.Count}
	}
	switch h.Step {
	case StepFence:
		how := o.Method
		if how == "" {
			how = "unreported"
		}
		s.log.Info("failover: fenced", append(kv, "how", how)...)
	case StepRecordFence:
		s.log.Info("failover: lease revoked, fence recorded", kv...)
	case StepReplayJournal:
		s.log.Info("failover: journal replayed", append(kv, count("records")...)...)
	case StepResync:
		s.log.Info("failover: resynced", append(kv, count("regions")...)...)
	case StepReleaseLocks:
		s.log.Info("failover: locks released", append(kv, count("locks")...)...)
	case StepDone:
		t := s.seen[id]
		total := h.Finished.Sub(rec.Requested)
		sinceDeath := h.Finished.Sub(t.suspected)
		s.log.Info("failover: done", "recovery", id, "took", total.Round(time.Millisecond),
			"since_suspected", sinceDeath.Round(time.Millisecond), "coordinator", h.Coordinator)
		if s.onDone != nil {
			s.onDone(rec, sinceDeath)
		}
	}
}

// Recall marks all that rec says as told, without a line and without
// onDone: for the records a node finds when it starts, of failovers that
// ended before it ran (etcd keeps them until they are pruned). Told again,
// each restart would repeat them in the log as if they had just happened
// and count them again in the failover metrics. A later record of the
// same recovery is told from where rec ends.
func (s *Story) Recall(rec Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.entry(rec.Victim.String())
	if !t.said {
		t.said, t.suspected = true, rec.Requested
	}
	for _, h := range rec.History {
		t.finished = max(t.finished, h.Step)
	}
}

// Drop forgets victim's recovery once its record is gone from etcd
// (pruned), so a long-running node keeps nothing per old failover.
func (s *Story) Drop(victim fencing.NodeRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, victim.String())
}
