package dlm

import (
	"slices"
	"strings"
)

// LockInfo describes one request in the table, for listings.
type LockInfo struct {
	ID       string   `json:"id"`
	Owner    Owner    `json:"owner"`
	Resource Resource `json:"resource"`
	// Held reports whether the request is granted, in Granted mode.
	Held    bool `json:"held"`
	Granted Mode `json:"granted"`
	// Want is the mode asked for; it differs from Granted while a
	// conversion waits.
	Want     Mode  `json:"want"`
	Token    Token `json:"token,omitempty"`
	GrantRev int64 `json:"grant_rev,omitempty"`
	// QueuedRev is the revision at which the request (or its pending
	// conversion) joined the queue.
	QueuedRev int64 `json:"queued_rev"`
	Orphan    bool  `json:"orphan,omitempty"`
	Recovery  bool  `json:"recovery,omitempty"`
	// Blocking is set when a blocking callback went out for this lock, in
	// BlockingMode.
	Blocking     bool `json:"blocking,omitempty"`
	BlockingMode Mode `json:"blocking_mode,omitempty"`
}

// Waiting reports whether the request (or its conversion) is queued.
func (l LockInfo) Waiting() bool { return !l.Held || l.Want != l.Granted }

func (e *entry) info() LockInfo {
	li := LockInfo{ID: e.ID, Owner: e.Owner, Resource: e.Resource, Held: e.held, Granted: e.granted, Want: e.Mode,
		Orphan: e.orphan, Recovery: e.Recovery, Blocking: e.blockSent, BlockingMode: e.blockMode, QueuedRev: e.createRev}
	if e.held {
		li.Token, li.GrantRev = e.token, e.grantRev
		li.QueuedRev = e.convRev
	}
	return li
}

// Locks lists every request in the table, ordered by resource then ID.
func (t *Table) Locks() []LockInfo {
	out := make([]LockInfo, 0, len(t.reqs))
	for _, e := range t.reqs {
		out = append(out, e.info())
	}
	slices.SortFunc(out, func(a, b LockInfo) int {
		if c := strings.Compare(a.Resource.space(), b.Resource.space()); c != 0 {
			return c
		}
		if a.Resource.Start != b.Resource.Start {
			if a.Resource.Start < b.Resource.Start {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Lock returns one request.
func (t *Table) Lock(id string) (LockInfo, bool) {
	e, ok := t.reqs[id]
	if !ok {
		return LockInfo{}, false
	}
	return e.info(), true
}

// DeadOwners lists the owners recorded as dead. The table remembers
// them so that a late write of a dead incarnation is dropped.
func (t *Table) DeadOwners() []Owner {
	var out []Owner
	for o := range t.dead {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Owner) int { return strings.Compare(a.String(), b.String()) })
	return out
}
