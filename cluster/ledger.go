package cluster

import "sort"

// deathLedger remembers the incarnations this node saw die that the
// coordinator has not yet recorded. Every node keeps one, so a node that
// becomes coordinator also records the deaths that happened while there
// was none (the old coordinator's own death, for one).
type deathLedger struct {
	max     int
	pending map[string]Event // by name/incarnation
}

func newDeathLedger(max int) *deathLedger {
	return &deathLedger{max: max, pending: map[string]Event{}}
}

func deathID(m MemberInfo) string { return m.Name + "/" + m.Incarnation }

// observe takes a member event; only deaths are kept. A clean departure
// needs no recovery.
func (l *deathLedger) observe(ev Event) {
	if ev.Kind != NodeDown {
		return
	}
	l.pending[deathID(ev.Member)] = ev
	if len(l.pending) > l.max {
		// Forget the oldest: a ledger this long means no coordinator for a
		// long time, and the recovery records in etcd are the real state.
		oldest := ""
		for id, e := range l.pending {
			if oldest == "" || e.Revision < l.pending[oldest].Revision {
				oldest = id
			}
		}
		delete(l.pending, oldest)
	}
}

// due lists pending deaths, oldest first.
func (l *deathLedger) due() []Event {
	out := make([]Event, 0, len(l.pending))
	for _, e := range l.pending {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Revision != out[j].Revision {
			return out[i].Revision < out[j].Revision
		}
		return deathID(out[i].Member) < deathID(out[j].Member)
	})
	return out
}

// done forgets a death once it is recorded (by this node or another).
func (l *deathLedger) done(m MemberInfo) { delete(l.pending, deathID(m)) }
