package store

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// ReplayWait is one thing a running replay (ReplaySlot) waits for, for the
// recovery's reports on a step that runs long.
type ReplayWait struct {
	// What is the kind: "replay" (what the replay is doing), "recovery
	// lock", "local lock" (held by a transaction of this node), "journal
	// writer" (a commit of this node is writing).
	What string
	// Resource names the lock or the journal, when there is one.
	Resource string
	// Since is when the wait began.
	Since time.Time
	// Detail says anything else that helps.
	Detail string
}

// replayState is what the replays running on this node do and wait for.
type replayState struct {
	phase map[int]string           // per slot being replayed
	waits map[*replayWaitNote]bool // waits in progress
}

type replayWaitNote struct{ w ReplayWait }

// setPhase records what the replay of slot does now ("" when it is over).
func (s *Store) setPhase(slot int, format string, args ...any) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if s.rep.phase == nil {
		s.rep.phase = map[int]string{}
	}
	if format == "" {
		delete(s.rep.phase, slot)
		return
	}
	s.rep.phase[slot] = fmt.Sprintf(format, args...)
}

// noteWait records that a recovery user waits for w until the returned
// func is called.
func (s *Store) noteWait(what, resource, detail string) (done func()) {
	n := &replayWaitNote{ReplayWait{What: what, Resource: resource, Since: s.clk.Now(), Detail: detail}}
	s.recMu.Lock()
	if s.rep.waits == nil {
		s.rep.waits = map[*replayWaitNote]bool{}
	}
	s.rep.waits[n] = true
	s.recMu.Unlock()
	return func() {
		s.recMu.Lock()
		delete(s.rep.waits, n)
		s.recMu.Unlock()
	}
}

// ReplayWaits says what the replays running on this node (ReplaySlot) do
// and wait for: one "replay" entry per slot being replayed (the phase:
// images in place, record i of n and its kind, the journal emptied), then
// the locks and the journal writer its transactions wait for, longest
// first. Empty when no replay runs. It does not block on the replay.
func (s *Store) ReplayWaits() []ReplayWait {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	var out []ReplayWait
	slots := make([]int, 0, len(s.rep.phase))
	for slot := range s.rep.phase {
		slots = append(slots, slot)
	}
	sort.Ints(slots)
	for _, slot := range slots {
		out = append(out, ReplayWait{What: "replay", Resource: fmt.Sprintf("journal of slot %d", slot), Detail: s.rep.phase[slot]})
	}
	var ws []ReplayWait
	hr, tells := s.cfg.Locks.(HolderReporter)
	for n := range s.rep.waits {
		w := n.w
		if tells && w.What == "recovery lock" {
			if hs := hr.Holders(w.Resource); len(hs) > 0 {
				w.Detail = "held by " + strings.Join(hs, ", ")
			}
		}
		ws = append(ws, w)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].Since.Before(ws[j].Since) })
	return append(out, ws...)
}
