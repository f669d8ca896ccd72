package dlm

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Owner is the node incarnation a request belongs to.
type Owner struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
}

func (o Owner) String() string { return o.Node + "/" + o.Incarnation }

// Token is a fencing token. Tokens of successive grants on overlapping
// resources strictly increase. The high bits are the etcd revision of the
// event that caused the grant, the low 16 bits number the grants made by
// events of that revision.
type Token uint64

// MakeToken builds a token from an event revision and a grant number.
func MakeToken(rev int64, n uint16) Token { return Token(uint64(rev)<<16 | uint64(n)) }

// Revision is the etcd revision of the event that granted the lock.
func (t Token) Revision() int64 { return int64(t >> 16) }

func (t Token) String() string { return fmt.Sprintf("%d.%d", t>>16, uint16(t)) }

// LVBSize is the size of a lock value block.
const LVBSize = 64

// Request is one lock request as the table sees it: a new request, or a
// conversion of an existing one (same ID).
type Request struct {
	// ID names the request uniquely (the distributed layer uses its etcd
	// key).
	ID       string
	Owner    Owner
	Resource Resource
	// Mode is the mode wanted.
	Mode Mode
	// Recovery marks a request of the recovery coordinator: it may be
	// granted over locks orphaned by dead owners.
	Recovery bool
	// NoQueue asks for an answer at once: if the request cannot be granted
	// when it arrives, it is refused and leaves no trace (try-lock).
	NoQueue bool
	// FailOnDeadlock offers the request as a deadlock victim: of the
	// requests in a wait-for cycle that carry it, the one queued last is
	// the victim (Table.DeadlockVictims).
	FailOnDeadlock bool
}

// DecisionKind says what a Decision reports.
type DecisionKind uint8

// Decision kinds.
const (
	// Granted: the request (new or conversion) is granted in Mode.
	Granted DecisionKind = iota + 1
	// Blocking: the holder of a granted lock is blocking a waiter that
	// wants Mode (the strongest such mode): a blocking callback.
	Blocking
	// Refused: a NoQueue request or conversion could not be granted at
	// once and was withdrawn (a conversion keeps its old mode).
	Refused
	// Dropped: a waiting request of a dead owner was removed.
	Dropped
	// Orphaned: a granted lock of a dead owner is held for the recovery
	// coordinator until it is released.
	Orphaned
)

var kindNames = map[DecisionKind]string{Granted: "grant", Blocking: "blocking", Refused: "refused", Dropped: "dropped", Orphaned: "orphaned"}

func (k DecisionKind) String() string { return kindNames[k] }

// Decision is an outcome of an event.
type Decision struct {
	Kind     DecisionKind
	ID       string
	Owner    Owner
	Resource Resource
	// Mode is the granted mode (Granted, Orphaned), the mode a waiter
	// wants (Blocking), or the refused mode (Refused).
	Mode Mode
	// Token is the fencing token of a grant.
	Token Token
	// LVB and LVBValid carry the lock value block with a grant.
	LVB      []byte
	LVBValid bool
}

func (d Decision) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %s %s", d.Kind, d.ID, d.Owner, d.Resource, d.Mode)
	if d.Kind == Granted {
		fmt.Fprintf(&b, " token=%s", d.Token)
		if d.LVBValid {
			fmt.Fprintf(&b, " lvb=%q", strings.TrimRight(string(d.LVB), "\x00"))
		} else {
			b.WriteString(" lvb=invalid")
		}
	}
	return b.String()
}

// entry is a request in the table.
type entry struct {
	Request
	held      bool  // granted in mode granted
	granted   Mode  // valid if held
	createRev int64 // FIFO position of a new request
	convRev   int64 // FIFO position of a pending conversion
	token     Token
	grantRev  int64
	orphan    bool // owner died while holding it
	blockSent bool // a blocking callback went out for blockMode
	blockMode Mode
}

func (e *entry) pending() bool { return !e.held || e.Mode != e.granted }

// queuedAt is the revision that placed a pending request in its queue:
// that of the conversion for a held lock, of the request otherwise.
func (e *entry) queuedAt() int64 {
	if e.held {
		return e.convRev
	}
	return e.createRev
}

// lvbState is the lock value block of one resource.
type lvbState struct {
	value []byte
	valid bool
	rev   int64
}

// Table is the deterministic lock table. It takes ordered events (each
// with the etcd revision it happened at) and returns decisions. Every node
// feeds its own table the same event stream and so computes the same
// grants. Table is not safe for concurrent use.
type Table struct {
	rev     int64
	tokRev  int64
	tokN    uint32
	reqs    map[string]*entry
	spaces  map[string]map[string]*entry
	dead    map[Owner]bool
	lvbs    map[string]*lvbState
	lastTok map[string]Token // highest token granted per space
	err     error            // first internal inconsistency seen
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{
		reqs:    map[string]*entry{},
		spaces:  map[string]map[string]*entry{},
		dead:    map[Owner]bool{},
		lvbs:    map[string]*lvbState{},
		lastTok: map[string]Token{},
	}
}

// Revision is the revision of the last event applied.
func (t *Table) Revision() int64 { return t.rev }

func (t *Table) advance(rev int64) error {
	if rev < t.rev {
		return fmt.Errorf("dlm: event at revision %d after revision %d", rev, t.rev)
	}
	t.rev = rev
	return nil
}

// Request applies a new request, or a conversion when r.ID is already in
// the table. A conversion must name the same owner and resource.
func (t *Table) Request(rev int64, r Request) ([]Decision, error) {
	if err := r.Resource.Validate(); err != nil {
		return nil, err
	}
	if !r.Mode.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrBadMode, r.Mode)
	}
	if r.ID == "" {
		return nil, fmt.Errorf("dlm: request without ID")
	}
	if err := t.advance(rev); err != nil {
		return nil, err
	}
	if t.dead[r.Owner] {
		// A write of a dead owner cannot normally happen (writes are
		// guarded by the owner's member key); drop it like its other
		// waiting requests.
		if _, ok := t.reqs[r.ID]; ok {
			return nil, nil
		}
		return []Decision{{Kind: Dropped, ID: r.ID, Owner: r.Owner, Resource: r.Resource, Mode: r.Mode}}, nil
	}
	e, ok := t.reqs[r.ID]
	if ok {
		if e.Owner != r.Owner || e.Resource != r.Resource {
			return nil, fmt.Errorf("dlm: conversion of %s changes owner or resource", r.ID)
		}
		e.Mode, e.NoQueue, e.Recovery, e.FailOnDeadlock = r.Mode, r.NoQueue, r.Recovery, r.FailOnDeadlock
		if e.held {
			e.convRev = rev
		} // else a waiting request re-queued with a new mode keeps its place
	} else {
		e = &entry{Request: r, createRev: rev, convRev: rev}
		t.reqs[r.ID] = e
		sp := t.spaces[r.Resource.space()]
		if sp == nil {
			sp = map[string]*entry{}
			t.spaces[r.Resource.space()] = sp
		}
		sp[r.ID] = e
	}
	out := t.settle(r.Resource.space())
	if e.NoQueue && e.pending() {
		// Try-lock: refuse now, leave no trace.
		out = append(out, Decision{Kind: Refused, ID: e.ID, Owner: e.Owner, Resource: e.Resource, Mode: e.Mode})
		if e.held {
			e.Mode = e.granted
		} else {
			t.remove(e)
		}
		e.NoQueue = false
		out = append(out, t.settle(r.Resource.space())...)
	}
	return out, nil
}

// Release removes a request, granted or waiting. Releasing an unknown ID
// is not an error (the request may have been refused or dropped).
func (t *Table) Release(rev int64, id string) ([]Decision, error) {
	if err := t.advance(rev); err != nil {
		return nil, err
	}
	e, ok := t.reqs[id]
	if !ok {
		return nil, nil
	}
	t.remove(e)
	return t.settle(e.Resource.space()), nil
}

func (t *Table) remove(e *entry) {
	delete(t.reqs, e.ID)
	sp := t.spaces[e.Resource.space()]
	delete(sp, e.ID)
	if len(sp) == 0 {
		delete(t.spaces, e.Resource.space())
	}
}

// MemberDown records that an owner died (its lease expired or it was
// replaced by a new incarnation). Its waiting requests are dropped; its
// granted locks become orphans that only a Recovery request may be
// granted over, until they are released. The value block of a resource
// whose PW or EX holder died becomes invalid.
func (t *Table) MemberDown(rev int64, o Owner) ([]Decision, error) {
	if err := t.advance(rev); err != nil {
		return nil, err
	}
	if t.dead[o] {
		return nil, nil
	}
	t.dead[o] = true
	var out []Decision
	spaces := map[string]bool{}
	for _, e := range t.sortedEntries(func(e *entry) bool { return e.Owner == o }) {
		spaces[e.Resource.space()] = true
		if !e.held {
			t.remove(e)
			out = append(out, Decision{Kind: Dropped, ID: e.ID, Owner: e.Owner, Resource: e.Resource, Mode: e.Mode})
			continue
		}
		e.Mode = e.granted // a pending conversion dies with its owner
		e.orphan = true
		if e.granted == PW || e.granted == EX {
			l := t.lvb(e.Resource)
			l.valid = false
			l.rev = rev
		}
		out = append(out, Decision{Kind: Orphaned, ID: e.ID, Owner: e.Owner, Resource: e.Resource, Mode: e.granted, Token: e.token})
	}
	for _, sp := range sortedKeys(spaces) {
		out = append(out, t.settle(sp)...)
	}
	return out, nil
}

// Dead reports whether o is recorded as dead.
func (t *Table) Dead(o Owner) bool { return t.dead[o] }

// SetLVB stores the lock value block of res, written by a PW or EX holder
// (or marked invalid by the recovery coordinator).
func (t *Table) SetLVB(rev int64, res Resource, value []byte, valid bool) error {
	if err := t.advance(rev); err != nil {
		return err
	}
	if len(value) > LVBSize {
		return fmt.Errorf("dlm: value block of %s is %d bytes, max %d", res, len(value), LVBSize)
	}
	if valid && !slices.ContainsFunc(value, func(b byte) bool { return b != 0 }) {
		// All zeros and valid is what LVB answers for a resource with no
		// value block: the table forgets it, as a DLM frees a resource
		// nobody holds, and its key is deleted (Node writes it so).
		delete(t.lvbs, res.String())
		return nil
	}
	l := t.lvb(res)
	l.value = append(make([]byte, 0, LVBSize), value...)
	l.valid = valid
	l.rev = rev
	return nil
}

// LVB returns the value block of res and whether it is valid.
func (t *Table) LVB(res Resource) ([]byte, bool) {
	l, ok := t.lvbs[res.String()]
	if !ok {
		return make([]byte, LVBSize), true
	}
	v := make([]byte, LVBSize)
	copy(v, l.value)
	return v, l.valid
}

// Known reports whether the table knows res: a request on an overlapping
// resource exists, or a value block of res was written.
func (t *Table) Known(res Resource) bool {
	if _, ok := t.lvbs[res.String()]; ok {
		return true
	}
	for _, e := range t.spaces[res.space()] {
		if e.Resource.Overlaps(res) {
			return true
		}
	}
	return false
}

func (t *Table) lvb(res Resource) *lvbState {
	l, ok := t.lvbs[res.String()]
	if !ok {
		l = &lvbState{valid: true}
		t.lvbs[res.String()] = l
	}
	return l
}

func (t *Table) nextToken() Token {
	if t.tokRev != t.rev {
		t.tokRev, t.tokN = t.rev, 0
	}
	if t.tokN > 0xffff && t.err == nil {
		t.err = fmt.Errorf("dlm: more than 65536 grants at revision %d", t.rev)
	}
	tok := MakeToken(t.rev, uint16(t.tokN))
	t.tokN++
	return tok
}

// queue returns the pending requests of a space in grant order:
// conversions by the time they were asked for, then recovery requests,
// then new requests, each by arrival.
func (t *Table) queue(sp map[string]*entry) []*entry {
	var q []*entry
	for _, e := range sp {
		if e.pending() {
			q = append(q, e)
		}
	}
	class := func(e *entry) int {
		switch {
		case e.held:
			return 0
		case e.Recovery:
			return 1
		default:
			return 2
		}
	}
	sort.Slice(q, func(i, j int) bool {
		a, b := q[i], q[j]
		if ca, cb := class(a), class(b); ca != cb {
			return ca < cb
		}
		ra, rb := a.createRev, b.createRev
		if a.held {
			ra, rb = a.convRev, b.convRev
		}
		if ra != rb {
			return ra < rb
		}
		return a.ID < b.ID
	})
	return q
}

// grantable reports whether pending request p can be granted now, given
// the granted locks of its space and the requests queued before it. A
// recovery request is granted over orphans and waits only for live
// holders and the recovery requests queued before it, not for plain
// requests or conversions (which may themselves wait for an orphan until
// the recovery ends).
func grantable(p *entry, sp map[string]*entry, ahead []*entry) bool {
	if p.held && Covers(p.granted, p.Mode) {
		return true // down-conversion: never waits
	}
	for _, x := range sp {
		if x == p || !x.held || !x.Resource.Overlaps(p.Resource) {
			continue
		}
		if !Compatible(p.Mode, x.granted) && !(p.Recovery && x.orphan) {
			return false
		}
	}
	for _, y := range ahead {
		if p.Recovery && !y.Recovery {
			// Recovery goes past the queue too: a conversion queued
			// before it may itself wait for an orphan, which is released
			// only after the recovery.
			continue
		}
		if y.pending() && y.Resource.Overlaps(p.Resource) && !Compatible(p.Mode, y.Mode) {
			return false
		}
	}
	return true
}

// settle grants what can be granted in a space and sends blocking
// callbacks to the holders that stand in a waiter's way.
func (t *Table) settle(space string) []Decision {
	sp := t.spaces[space]
	if sp == nil {
		return nil
	}
	var out []Decision
	for range len(sp) + 1 {
		changed := false
		q := t.queue(sp)
		for i, p := range q {
			if !p.pending() || !grantable(p, sp, q[:i]) {
				continue
			}
			p.held, p.granted = true, p.Mode
			p.token = t.nextToken()
			p.grantRev = t.rev
			p.blockSent = false
			if p.token > t.lastTok[space] {
				t.lastTok[space] = p.token
			} else if t.err == nil {
				t.err = fmt.Errorf("dlm: token %s of %s not above %s", p.token, p.ID, t.lastTok[space])
			}
			v, ok := t.LVB(p.Resource)
			out = append(out, Decision{Kind: Granted, ID: p.ID, Owner: p.Owner, Resource: p.Resource, Mode: p.granted, Token: p.token, LVB: v, LVBValid: ok})
			changed = true
		}
		if !changed {
			break
		}
	}
	// Blocking callbacks.
	q := t.queue(sp)
	for _, x := range sortedEntryList(sp) {
		if !x.held || x.orphan {
			x.blockSent = false
			continue
		}
		want, blocking := NL, false
		for _, p := range q {
			if p == x || !p.Resource.Overlaps(x.Resource) || Compatible(p.Mode, x.granted) {
				continue
			}
			want, blocking = Sup(want, p.Mode), true
		}
		if !blocking {
			x.blockSent = false // a new waiter will need a new callback
			continue
		}
		if x.blockSent && Covers(x.blockMode, want) {
			continue
		}
		if x.blockSent {
			want = Sup(want, x.blockMode)
		}
		x.blockSent, x.blockMode = true, want
		out = append(out, Decision{Kind: Blocking, ID: x.ID, Owner: x.Owner, Resource: x.Resource, Mode: want})
	}
	return out
}

func sortedEntryList(sp map[string]*entry) []*entry {
	l := make([]*entry, 0, len(sp))
	for _, e := range sp {
		l = append(l, e)
	}
	slices.SortFunc(l, func(a, b *entry) int { return strings.Compare(a.ID, b.ID) })
	return l
}

func (t *Table) sortedEntries(keep func(*entry) bool) []*entry {
	var l []*entry
	for _, e := range t.reqs {
		if keep(e) {
			l = append(l, e)
		}
	}
	slices.SortFunc(l, func(a, b *entry) int { return strings.Compare(a.ID, b.ID) })
	return l
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
