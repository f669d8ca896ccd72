package store

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// MemLocks is an in-memory lock manager shared by several in-process nodes:
// the twin of the DLM for tests. Locks are granted in FIFO order per
// resource, recovery requests before plain ones; a holder whose grant
// blocks a waiter sees its Blocking channel closed. Kill makes a node's
// locks orphans that only Recovery requests are granted over, until
// ReleaseDead, as the DLM does for a dead node: a recovery request goes
// past the orphans and past the plain requests queued behind them (which
// wait until the recovery ends), never behind them.
type MemLocks struct {
	mu    sync.Mutex
	res   map[string]*memRes
	dead  map[string]bool
	grant uint64
}

type memRes struct {
	token   uint64
	lvb     []byte
	valid   bool
	holders map[*memLock]bool
	queue   []*memWaiter
}

type memWaiter struct {
	node     string
	mode     LockMode
	recovery bool
	ch       chan *memLock
}

type memLock struct {
	t        *MemLocks
	node     string
	name     string
	mode     LockMode
	token    uint64
	lvb      []byte
	valid    bool
	recovery bool
	blockCh  chan struct{}
	blocked  bool
	released bool
}

// NewMemLocks returns an empty lock manager.
func NewMemLocks() *MemLocks {
	return &MemLocks{res: map[string]*memRes{}, dead: map[string]bool{}}
}

// Node returns the Locker of node name.
func (t *MemLocks) Node(name string) Locker { return memNode{t, name} }

// Kill marks node dead: its Use fails from now on, its grants stay held
// (orphaned) until ReleaseDead; an EX grant's value block becomes invalid.
func (t *MemLocks) Kill(node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dead[node] = true
	for name, r := range t.res {
		for l := range r.holders {
			if l.node == node && l.mode == Exclusive {
				r.valid = false
			}
		}
		// Its queued requests are dropped (refused with ErrFenced), as
		// the DLM drops a dead incarnation's waiting requests.
		q := r.queue[:0]
		for _, w := range r.queue {
			if w.node == node {
				w.ch <- nil
				continue
			}
			q = append(q, w)
		}
		r.queue = q
		t.drive(name, r)
	}
}

// ReleaseDead drops the orphaned grants of dead node. The node stays
// dead, as the DLM remembers a dead incarnation: a late request of it (a
// handler of the dead incarnation still running in the same process) is
// refused with ErrFenced, never granted. A new incarnation takes a new
// name.
func (t *MemLocks) ReleaseDead(node string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, r := range t.res {
		for l := range r.holders {
			if l.node == node {
				l.released = true
				delete(r.holders, l)
			}
		}
		t.drive(name, r)
	}
}

// Holders lists who holds name, for tests: "node:mode" strings.
func (t *MemLocks) Holders(name string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	if r := t.res[name]; r != nil {
		for l := range r.holders {
			out = append(out, l.node+":"+l.mode.String())
		}
	}
	return out
}

// Holders lists who holds name (HolderReporter).
func (n memNode) Holders(name string) []string {
	t := n.t
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	if r := t.res[name]; r != nil {
		for l := range r.holders {
			s := l.node + " " + l.mode.String()
			if t.dead[l.node] {
				s += " orphan"
			}
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// Orphaned reports whether a dead node holds name in a mode that
// conflicts with mode (OrphanReporter).
func (n memNode) Orphaned(name string, mode LockMode) bool {
	t := n.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.res[name]; r != nil {
		for l := range r.holders {
			if t.dead[l.node] && !compatible(l.mode, mode) {
				return true
			}
		}
	}
	return false
}

// Waiting lists the requests queued on name in grant order, for tests and
// reports: "node:mode" strings, with ":recovery" for recovery requests.
func (t *MemLocks) Waiting(name string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	if r := t.res[name]; r != nil {
		for _, w := range r.queue {
			s := w.node + ":" + w.mode.String()
			if w.recovery {
				s += ":recovery"
			}
			out = append(out, s)
		}
	}
	return out
}

type memNode struct {
	t    *MemLocks
	name string
}

func compatible(a, b LockMode) bool { return a == Shared && b == Shared }

// grantable reports, under mu, whether w may be granted on r now.
func (t *MemLocks) grantable(r *memRes, w *memWaiter) bool {
	for l := range r.holders {
		if t.dead[l.node] && w.recovery {
			continue // recovery requests go over orphans
		}
		if !compatible(l.mode, w.mode) {
			return false
		}
	}
	return true
}

func (t *MemLocks) drive(name string, r *memRes) {
	for len(r.queue) > 0 {
		w := r.queue[0]
		if !t.grantable(r, w) {
			// Tell the holders in the way.
			for l := range r.holders {
				if !compatible(l.mode, w.mode) && !l.blocked && !t.dead[l.node] {
					l.blocked = true
					if l.blockCh != nil {
						close(l.blockCh)
					}
				}
			}
			return
		}
		r.queue = r.queue[1:]
		t.grant++
		r.token = t.grant
		l := &memLock{t: t, node: w.node, name: name, mode: w.mode, token: r.token,
			lvb: append([]byte(nil), r.lvb...), valid: r.valid, recovery: w.recovery}
		r.holders[l] = true
		w.ch <- l
	}
}

func (n memNode) Lock(ctx context.Context, name string, mode LockMode, opts LockOptions) (Lock, error) {
	if mode != Shared && mode != Exclusive {
		return nil, fmt.Errorf("store: lock %s in unknown mode %d", name, mode)
	}
	t := n.t
	t.mu.Lock()
	if t.dead[n.name] {
		t.mu.Unlock()
		return nil, ErrFenced
	}
	r := t.res[name]
	if r == nil {
		r = &memRes{holders: map[*memLock]bool{}, valid: true}
		t.res[name] = r
	}
	w := &memWaiter{node: n.name, mode: mode, recovery: opts.Recovery, ch: make(chan *memLock, 1)}
	at := r.queuePos(w)
	if opts.Try && (at > 0 || !t.grantable(r, w)) {
		t.mu.Unlock()
		return nil, ErrWouldBlock
	}
	r.queue = slices.Insert(r.queue, at, w)
	t.drive(name, r)
	t.mu.Unlock()
	select {
	case l := <-w.ch:
		if l == nil {
			return nil, ErrFenced
		}
		return l, nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case l := <-w.ch:
		if l == nil {
			return nil, ErrFenced
		}
		l.released = true
		delete(r.holders, l)
	default:
		for i, x := range r.queue {
			if x == w {
				r.queue = append(r.queue[:i], r.queue[i+1:]...)
				break
			}
		}
	}
	t.drive(name, r)
	return nil, ctx.Err()
}

// queuePos is where w goes in r's queue: recovery requests after the
// recovery requests queued before them and ahead of every plain one, plain
// requests at the end.
func (r *memRes) queuePos(w *memWaiter) int {
	if !w.recovery {
		return len(r.queue)
	}
	for i, x := range r.queue {
		if !x.recovery {
			return i
		}
	}
	return len(r.queue)
}

func (l *memLock) Mode() LockMode { return l.mode }
func (l *memLock) Token() uint64  { return l.token }
func (l *memLock) LVB() ([]byte, bool) {
	return append([]byte(nil), l.lvb...), l.valid
}

func (l *memLock) SetLVB(b []byte) error {
	if l.mode != Exclusive {
		return fmt.Errorf("store: value block of %s written under %s", l.name, l.mode)
	}
	if len(b) > 64 {
		return fmt.Errorf("store: value block of %d bytes, max 64", len(b))
	}
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	l.lvb, l.valid = append([]byte(nil), b...), true
	return nil
}

func (l *memLock) Blocking() <-chan struct{} {
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	if l.blockCh == nil {
		l.blockCh = make(chan struct{})
		if l.blocked || l.released {
			close(l.blockCh)
		}
	}
	return l.blockCh
}

func (l *memLock) Use() error {
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	if l.released {
		return fmt.Errorf("store: lock %s used after release", l.name)
	}
	if l.t.dead[l.node] {
		return ErrFenced
	}
	return nil
}

func (l *memLock) Release() error {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead[l.node] {
		// A dead node's grants stay until ReleaseDead (and a late
		// hand-over of the dead node after it is not a second release).
		return ErrFenced
	}
	if l.released {
		return fmt.Errorf("store: lock %s released twice", l.name)
	}
	l.released = true
	r := t.res[l.name]
	delete(r.holders, l)
	if l.mode == Exclusive {
		r.lvb, r.valid = l.lvb, l.valid
	}
	if !l.blocked && l.blockCh != nil {
		l.blocked = true
		close(l.blockCh)
	}
	t.drive(l.name, r)
	return nil
}
