package cluster

import (
	"sort"

	"github.com/shoal-ha/shoal/internal/keys"
)

// EventKind says what happened to a member.
type EventKind string

// Member events.
const (
	NodeUp   EventKind = "up"   // a new incarnation registered
	NodeDown EventKind = "down" // an incarnation vanished without leaving: dead or cut off
	NodeLeft EventKind = "left" // an incarnation shut down cleanly
)

// Event is one change of the live member set, at an etcd revision.
type Event struct {
	Kind     EventKind         `json:"kind"`
	Member   keys.MemberRecord `json:"member"`
	Revision int64             `json:"revision"`
}

// View is the live member set as one node sees it, built from the ordered
// changes of the member keys. It is a plain type: the watcher feeds it, and
// tests drive it directly.
type View struct {
	members map[string]keys.MemberRecord
	rev     int64
}

// NewView returns an empty view.
func NewView() *View { return &View{members: map[string]keys.MemberRecord{}} }

// Reset replaces the view with a full listing taken at rev, and returns
// the events that turn the old view into the new one (downs first).
func (v *View) Reset(list []keys.MemberRecord, rev int64) []Event {
	next := map[string]keys.MemberRecord{}
	for _, m := range list {
		next[m.Name] = m
	}
	var evs []Event
	for _, name := range sortedNames(v.members) {
		old := v.members[name]
		if m, ok := next[name]; !ok || m.Incarnation != old.Incarnation {
			evs = append(evs, Event{Kind: goneKind(old), Member: old, Revision: rev})
		}
	}
	for _, name := range sortedNames(next) {
		m := next[name]
		if old, ok := v.members[name]; !ok || old.Incarnation != m.Incarnation {
			evs = append(evs, Event{Kind: NodeUp, Member: m, Revision: rev})
		}
	}
	v.members = next
	v.rev = rev
	return evs
}

// Put applies a write of a member key at rev. A new incarnation under a
// known name means the old one is gone.
func (v *View) Put(m keys.MemberRecord, rev int64) []Event {
	if rev <= v.rev {
		return nil
	}
	v.rev = rev
	old, ok := v.members[m.Name]
	v.members[m.Name] = m
	switch {
	case !ok:
		return []Event{{Kind: NodeUp, Member: m, Revision: rev}}
	case old.Incarnation != m.Incarnation:
		return []Event{{Kind: goneKind(old), Member: old, Revision: rev}, {Kind: NodeUp, Member: m, Revision: rev}}
	default:
		return nil // the same incarnation updated its record (e.g. leaving)
	}
}

// Delete applies the removal of a member key at rev (lease expired or
// revoked).
func (v *View) Delete(name string, rev int64) []Event {
	if rev <= v.rev {
		return nil
	}
	v.rev = rev
	old, ok := v.members[name]
	if !ok {
		return nil
	}
	delete(v.members, name)
	return []Event{{Kind: goneKind(old), Member: old, Revision: rev}}
}

// Members lists the live members by name.
func (v *View) Members() []keys.MemberRecord {
	out := make([]keys.MemberRecord, 0, len(v.members))
	for _, name := range sortedNames(v.members) {
		out = append(out, v.members[name])
	}
	return out
}

// Get returns the live member called name.
func (v *View) Get(name string) (keys.MemberRecord, bool) {
	m, ok := v.members[name]
	return m, ok
}

// Revision is the etcd revision the view reflects.
func (v *View) Revision() int64 { return v.rev }

func goneKind(m keys.MemberRecord) EventKind {
	if m.Leaving {
		return NodeLeft
	}
	return NodeDown
}

func sortedNames(m map[string]keys.MemberRecord) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
