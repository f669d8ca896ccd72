package dlm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/attempt"
)

// Option changes how Acquire asks for a lock.
type Option func(*waiter, *nodeLock)

// Try makes Acquire fail at once with ErrWouldBlock instead of waiting.
// Nothing is left queued.
func Try() Option { return func(w *waiter, _ *nodeLock) { w.try = true } }

// FailOnDeadlock makes Acquire (or Convert) fail with ErrDeadlock when its
// request is the victim of a wait-for cycle for longer than
// Config.DeadlockGrace. The victim is one request per cycle, the one of
// those asking for this option that was queued last, chosen alike on
// every node (Table.DeadlockVictims); the other sides keep waiting. A
// failed conversion keeps its old mode: releasing it (or converting down)
// lets the others through. Retrying at once may deadlock again.
func FailOnDeadlock() Option { return func(w *waiter, _ *nodeLock) { w.failOn = true } }

// Recovery asks for a recovery lock: it is granted over locks orphaned by
// dead nodes (and only such requests are). Only the recovery coordinator
// may use it. Recovery locks are never cached.
func Recovery() Option { return func(_ *waiter, nl *nodeLock) { nl.recovery = true } }

// Lock is one local user's hold on a lock. It is not safe for concurrent
// use by several goroutines.
type Lock struct {
	n        *Node
	nl       *nodeLock
	mode     Mode
	token    Token
	lvb      []byte
	lvbValid bool
	released bool
}

// Resource is the locked resource.
func (l *Lock) Resource() Resource { return l.nl.res }

// Mode is the mode held.
func (l *Lock) Mode() Mode { return l.mode }

// Token is the fencing token of the grant this hold rides on. It strictly
// increases across grants of overlapping resources. When the node's grant
// is converted (up for another local user, or down once local users
// allow), the hold rides on the conversion's grant and Token returns its
// token from then on (see Settle).
func (l *Lock) Token() Token {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	return l.token
}

// Settle waits (within ctx) until the node has no write and no conversion
// in flight for the grant this hold rides on, so that Token is the token
// of the grant the cluster made last, as the lock table shows it. A
// down-conversion returns at once and the node converts its grant in the
// cluster after it (when another node waits); Settle waits for that.
// It returns ErrNotOwner after Release, the node's error once it is
// fenced, or ctx's error.
func (l *Lock) Settle(ctx context.Context) error {
	n := l.n
	stop := context.AfterFunc(ctx, func() {
		n.mu.Lock()
		n.revCond.Broadcast()
		n.mu.Unlock()
	})
	defer stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		nl := l.nl
		switch {
		case l.released:
			return ErrNotOwner
		case n.fenced != nil:
			return n.fenced
		case !nl.busy && (nl.key == "" || !nl.held || nl.want == nl.granted):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		n.revCond.Wait()
	}
}

// LVB returns the lock value block as of the grant and whether it is
// valid (it is not after a PW or EX holder died without writing it back).
func (l *Lock) LVB() ([]byte, bool) { return append([]byte(nil), l.lvb...), l.lvbValid }

// Lost is closed when the node stops using its locks.
func (l *Lock) Lost() <-chan struct{} { return l.n.lost }

// Blocking returns a channel that is closed when another node queues a
// request that conflicts with the node's grant this hold rides on (the
// blocking callback): the holder should finish and release soon.
func (l *Lock) Blocking() <-chan struct{} {
	n := l.n
	n.mu.Lock()
	defer n.mu.Unlock()
	nl := l.nl
	if l.released || nl.blocked || !nl.held || n.fenced != nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	if nl.blockCh == nil {
		nl.blockCh = make(chan struct{})
	}
	return nl.blockCh
}

// SetLVB sets the value block; it is written to etcd when the node gives
// the lock up or down-converts it. Only PW and EX holders may write it.
// An all-zero block (what a resource that never had one reads as) is
// written by deleting the resource's value-block key: a holder that
// leaves nothing worth keeping leaves nothing behind in etcd or in the
// lock table.
func (l *Lock) SetLVB(b []byte) error {
	if l.mode != PW && l.mode != EX {
		return fmt.Errorf("%w: value block written under %s (needs PW or EX)", ErrBadMode, l.mode)
	}
	if len(b) > LVBSize {
		return fmt.Errorf("dlm: value block of %d bytes, max %d", len(b), LVBSize)
	}
	n := l.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if l.released {
		return ErrNotOwner
	}
	if err := n.alive(); err != nil {
		return err
	}
	v := make([]byte, LVBSize)
	copy(v, b)
	l.lvb, l.lvbValid = v, true
	l.nl.lvb, l.nl.lvbValid, l.nl.lvbDirty = v, true, true
	return nil
}

// Use checks, right before the caller touches what the lock protects,
// that the node may still use its locks: its lease is held and the
// self-fence deadline (on the node's own clock) has not passed. It
// returns ErrLeaseLost otherwise. Every successful Use is recorded in the
// node's Audit.
func (l *Lock) Use() error {
	n := l.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if l.released {
		return ErrNotOwner
	}
	if err := n.alive(); err != nil {
		n.audit.Refused++
		return err
	}
	n.audit.Uses++
	n.audit.LastUse = n.cfg.Clock.Now()
	n.audit.DeadlineAtLastUse = n.cfg.Member.Deadline()
	return nil
}

// Release gives up this hold. The node keeps the lock cached unless
// another node needs it (or caching is off).
func (l *Lock) Release() error {
	n := l.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if l.released {
		return ErrNotOwner
	}
	l.released = true
	nl := l.nl
	delete(nl.users, l)
	if len(nl.users) == 0 {
		n.idleTick++
		nl.idleSince = n.idleTick
		n.mayIdle++
		if !n.cfg.CacheLocks || nl.recovery {
			// Not cached: the grant is spent even if a write is still in
			// flight; the release follows as soon as it is done.
			nl.draining = true
		}
	}
	n.drive(nl)
	n.evict()
	return nil
}

// Convert changes the mode of this hold, waiting (within ctx) when the
// new mode needs the cluster. The hold keeps its old mode meanwhile.
func (l *Lock) Convert(ctx context.Context, mode Mode, opts ...Option) error {
	if !mode.Valid() {
		return fmt.Errorf("%w: %d", ErrBadMode, mode)
	}
	n := l.n
	n.mu.Lock()
	if l.released {
		n.mu.Unlock()
		return ErrNotOwner
	}
	nl := l.nl
	w := &waiter{mode: mode, conv: l, ch: make(chan *Lock, 1)}
	for _, o := range opts {
		o(w, &nodeLock{})
	}
	// Conversions go ahead of local newcomers.
	i := 0
	for i < len(nl.waiters) && nl.waiters[i].conv != nil {
		i++
	}
	n.waiterSeq++
	w.seq = n.waiterSeq
	nl.waiters = append(nl.waiters[:i], append([]*waiter{w}, nl.waiters[i:]...)...)
	n.drive(nl)
	n.mu.Unlock()
	_, err := n.await(ctx, nl, w)
	return err
}

// Acquire takes a lock on res in mode, waiting until it is granted or ctx
// ends. When the node already holds the lock in a covering mode (lock
// caching) no etcd request is made.
func (n *Node) Acquire(ctx context.Context, res Resource, mode Mode, opts ...Option) (*Lock, error) {
	if err := res.Validate(); err != nil {
		return nil, err
	}
	if !mode.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrBadMode, mode)
	}
	// The fast path below allocates nothing but the Lock: options are
	// applied to a separate waiter only when there are any.
	fw := waiter{mode: mode}
	var w *waiter
	recovery := false
	if len(opts) > 0 {
		w = &waiter{mode: mode}
		var probe nodeLock
		for _, o := range opts {
			o(w, &probe)
		}
		recovery = probe.recovery
		fw.try = w.try
	}
	name := res.String()
	if recovery {
		name = "recovery:" + name
	}
	n.mu.Lock()
	if err := n.alive(); err != nil {
		n.mu.Unlock()
		return nil, err
	}
	nl := n.locks[name]
	if nl == nil {
		nl = &nodeLock{name: name, res: res, recovery: recovery, users: map[*Lock]Mode{}}
		n.locks[name] = nl
	}
	// Fast path: a cached grant that covers the mode.
	if len(nl.waiters) == 0 && n.admissible(nl, &fw) {
		n.stats.CachedGrants++
		l := n.grantLocal(nl, &fw)
		n.mu.Unlock()
		if n.cfg.OnAcquire != nil {
			n.cfg.OnAcquire(mode, 0)
		}
		return l, nil
	}
	if w == nil {
		w = &waiter{mode: mode}
	}
	if w.try && (len(nl.waiters) > 0 || nl.blocked || (nl.held && Covers(nl.granted, mode)) || nl.busy) {
		n.mu.Unlock()
		return nil, ErrWouldBlock
	}
	n.waiterSeq++
	w.seq = n.waiterSeq
	w.ch = make(chan *Lock, 1)
	nl.waiters = append(nl.waiters, w)
	n.drive(nl)
	n.mu.Unlock()
	if n.cfg.OnAcquire == nil {
		return n.await(ctx, nl, w)
	}
	start := n.cfg.Clock.Now()
	l, err := n.await(ctx, nl, w)
	if err == nil {
		n.cfg.OnAcquire(mode, n.cfg.Clock.Since(start))
	}
	return l, err
}

func (n *Node) await(ctx context.Context, nl *nodeLock, w *waiter) (*Lock, error) {
	var tick <-chan time.Time
	if w.failOn {
		t := n.cfg.Clock.NewTicker(n.cfg.DeadlockGrace / 4)
		defer t.Stop()
		tick = t.C()
	}
wait:
	for {
		select {
		case l := <-w.ch:
			return l, w.err
		case <-tick:
			if n.checkDeadlock(nl, w) {
				return nil, fmt.Errorf("%w: %s waits in a cycle for longer than %v", ErrDeadlock, nl.res, n.cfg.DeadlockGrace)
			}
		case <-ctx.Done():
			break wait
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if w.done {
		l := <-w.ch
		if w.err != nil {
			return nil, w.err
		}
		if l != nil && w.conv == nil {
			// Granted just as the caller gave up: hand it back.
			l.released = true
			delete(nl.users, l)
			n.drive(nl)
		}
		return nil, ctx.Err()
	}
	n.removeWaiter(nl, w)
	n.drive(nl)
	return nil, ctx.Err()
}

func (n *Node) removeWaiter(nl *nodeLock, w *waiter) {
	for i, x := range nl.waiters {
		if x == w {
			nl.waiters = append(nl.waiters[:i], nl.waiters[i+1:]...)
			return
		}
	}
}

func (n *Node) finish(w *waiter, l *Lock, err error) {
	if w.done {
		return
	}
	w.done, w.err = true, err
	if w.ch != nil { // nil on the fast path, where nobody waits
		w.ch <- l
	}
}

// admissible reports whether local waiter w can be let in now.
func (n *Node) admissible(nl *nodeLock, w *waiter) bool {
	if !nl.held || nl.draining || (nl.blocked && w.conv == nil && !n.before(nl, w)) || !Covers(nl.granted, w.mode) {
		return false
	}
	for u, m := range nl.users {
		if u != w.conv && !Compatible(w.mode, m) {
			return false
		}
	}
	return true
}

// before reports whether w queued locally before nl's blocking callback
// came: the grant was asked for it, so it gets in before the lock is
// handed on (FIFO across nodes).
func (n *Node) before(nl *nodeLock, w *waiter) bool {
	return w.seq != 0 && w.seq <= nl.blockedAt
}

// admissibleBlocked is admissible for the waiters a fresh grant was asked
// for: they get in even though a blocking callback came with the grant
// (else the node would hand the lock on without ever using it).
func (n *Node) admissibleBlocked(nl *nodeLock, w *waiter) bool {
	b := nl.blocked
	nl.blocked = false
	ok := n.admissible(nl, w)
	nl.blocked = b
	return ok
}

func (n *Node) grantLocal(nl *nodeLock, w *waiter) *Lock {
	n.stats.LocalGrants++
	if w.conv != nil {
		l := w.conv
		l.mode = w.mode
		nl.users[l] = w.mode
		l.token = nl.token
		n.finish(w, l, nil)
		return l
	}
	l := &Lock{n: n, nl: nl, mode: w.mode, token: nl.token, lvb: nl.lvb, lvbValid: nl.lvbValid}
	nl.users[l] = w.mode
	n.finish(w, l, nil)
	return l
}

// localNeed is the weakest mode that serves every local holder.
func localNeed(nl *nodeLock) (Mode, bool) {
	need, any := NL, false
	for _, m := range nl.users {
		need, any = Sup(need, m), true
	}
	return need, any
}

// drive moves a node lock forward, under mu: it lets local waiters in,
// answers blocking callbacks once local users allow, and asks the cluster
// for what local waiters need. At most one etcd write per lock is in
// flight.
func (n *Node) drive(nl *nodeLock) {
	if n.fenced != nil {
		for _, w := range nl.waiters {
			n.finish(w, nil, n.fenced)
		}
		nl.waiters = nil
		return
	}
	if nl.refused {
		nl.refused = false
		if len(nl.waiters) > 0 && nl.waiters[0].try {
			n.finish(nl.waiters[0], nil, ErrWouldBlock)
			nl.waiters = nl.waiters[1:]
		}
	}
	fresh := nl.fresh
	nl.fresh = false
	for len(nl.waiters) > 0 && (n.admissible(nl, nl.waiters[0]) || fresh && n.admissibleBlocked(nl, nl.waiters[0])) {
		w := nl.waiters[0]
		nl.waiters = nl.waiters[1:]
		n.grantLocal(nl, w)
	}
	if len(nl.waiters) > 0 && nl.waiters[0].try && nl.held && Covers(nl.granted, nl.waiters[0].mode) {
		// A try that only local holders stand in the way of.
		n.finish(nl.waiters[0], nil, ErrWouldBlock)
		nl.waiters = nl.waiters[1:]
	}
	if nl.busy {
		return
	}
	need, used := localNeed(nl)
	var head *waiter
	if len(nl.waiters) > 0 {
		head = nl.waiters[0]
	}
	switch {
	case nl.key != "" && nl.held && nl.want == nl.granted && head != nil && head.conv != nil && !Covers(nl.granted, head.mode):
		// A local holder converts up: conversions go ahead of the
		// waiters this node blocks, as in the cluster's queue.
		n.startConvert(nl, Sup(nl.granted, head.mode), head.try, head.failOn)
	case nl.key != "" && !nl.held && len(nl.waiters) == 0:
		// Nobody wants it any more (cancelled or refused): withdraw.
		n.startRelease(nl)
	case nl.key != "" && nl.held && nl.blocked && nl.want == nl.granted:
		// Blocking callback: give way once local holders allow, but first
		// serve the local waiters that queued before it and that the grant
		// covers (they wait only for other local holders). A draining
		// grant (spent: a recovery grant, never cached, or caching off)
		// serves nobody more: it is released, and they ask anew.
		if head != nil && !nl.draining && n.before(nl, head) && Covers(nl.granted, head.mode) {
			break
		}
		if !used {
			n.startRelease(nl)
		} else if Compatible(need, nl.blockMode) && need != nl.granted {
			n.startConvert(nl, need, false, false)
		}
	case nl.key != "" && nl.held && !Covers(nl.granted, nl.want) && (len(nl.waiters) == 0 || Covers(nl.granted, nl.waiters[0].mode)):
		// A pending conversion up that nobody waits for any more: take it
		// back. (A conversion down is granted by the table at once: its
		// write may have landed before the watch brings the grant, and
		// taking it "back" then would convert up again, over and over.)
		n.startConvert(nl, nl.granted, false, false)
	case nl.key != "" && nl.held && !used && (nl.draining || len(nl.waiters) == 0 && (!n.cfg.CacheLocks || nl.recovery)):
		n.startRelease(nl)
	case nl.key != "" && nl.held && nl.blocked && !used && head != nil && head.conv == nil && !Covers(nl.granted, head.mode):
		// Converting up a cached grant that no local user holds any more,
		// while it stands in another node's way: give it up and queue
		// anew. Kept, it could wait forever: two nodes converting their
		// idle PR grants up to EX each wait for the other's PR (a
		// conversion deadlock no caller asked for; caching made it).
		n.startRelease(nl)
		n.startCreate(nl, head.mode, head.try, head.failOn)
	case len(nl.waiters) > 0:
		w := nl.waiters[0]
		switch {
		case nl.key == "":
			n.startCreate(nl, w.mode, w.try, w.failOn)
		case nl.held && nl.want == nl.granted && !Covers(nl.granted, w.mode):
			n.startConvert(nl, Sup(nl.granted, w.mode), w.try, w.failOn)
		case !nl.held && !Covers(nl.want, w.mode):
			n.startConvert(nl, Sup(nl.want, w.mode), false, w.failOn)
		}
	case nl.key == "" && !used && len(nl.waiters) == 0:
		delete(n.locks, nl.name)
	}
}

// evict releases the oldest idle cached locks beyond Config.MaxCached.
// Only idle locks count (held by this node from the cluster, no local
// user, no local waiter, no write in flight): locks in use are not a
// cache, and counting them would release every idle lock at once as soon
// as a node holds more than MaxCached, so that each reuse asks etcd again.
//
// Finding the idle locks walks them all, so a walk runs only when the
// idle count may be past the limit (mayIdle: the count at the last walk
// plus the holds released since; a grant left idle by a cancelled waiter
// is found by the next walk), and one that finds too many trims to
// MaxCached less a sixteenth, so that the next walk is that many releases
// away: a release costs O(locks/(MaxCached/16)) amortised, not O(locks).
func (n *Node) evict() {
	if n.fenced != nil || n.cfg.MaxCached == 0 || n.mayIdle <= n.cfg.MaxCached {
		return
	}
	var idle []*nodeLock
	for _, nl := range n.locks {
		if nl.key != "" && nl.held && !nl.busy && len(nl.users) == 0 && len(nl.waiters) == 0 {
			idle = append(idle, nl)
		}
	}
	n.mayIdle = len(idle)
	if len(idle) <= n.cfg.MaxCached {
		return
	}
	keep := n.cfg.MaxCached - n.cfg.MaxCached/16
	slices.SortFunc(idle, func(a, b *nodeLock) int { return cmp.Compare(a.idleSince, b.idleSince) })
	n.releaseBatch(idle[:len(idle)-keep])
	n.mayIdle = keep
}

// lvbWrite is the write of nl's value block: a put, or the key's delete
// when the value is all zeros (what a resource without a value block
// reads as: Table.SetLVB forgets it), so that a resource whose holders
// leave nothing worth keeping leaves no key behind.
func (n *Node) lvbWrite(nl *nodeLock) clientv3.Op {
	if !slices.ContainsFunc(nl.lvb, func(b byte) bool { return b != 0 }) {
		return clientv3.OpDelete(n.keys.lvb(nl.res))
	}
	return clientv3.OpPut(n.keys.lvb(nl.res), mustJSON(lvbValue{Value: nl.lvb, Valid: true}))
}

func (n *Node) guard() clientv3.Cmp {
	m := n.cfg.Member
	return clientv3.Compare(clientv3.LeaseValue(m.MemberKey()), "=", int64(m.LeaseID()))
}

func (n *Node) startCreate(nl *nodeLock, mode Mode, try, failOn bool) {
	key := n.keys.req(n.me, n.seq)
	n.seq++
	nl.key, nl.want, nl.held, nl.blocked = key, mode, false, false
	n.byKey[key] = nl
	val := mustJSON(requestValue{Resource: nl.res, Mode: mode, Recovery: nl.recovery, NoQueue: try, FailOnDeadlock: failOn})
	nl.reqVal = val
	// The request reads itself back: its creation revision is the one
	// later conversions and the release are guarded on, and an attempt
	// sent again after one that did land (a leader change) only rewrites
	// the same value, so the header's revision would be a later one.
	n.write(nl, lockWrite{ops: []clientv3.Op{clientv3.OpPut(key, val), clientv3.OpGet(key)}, track: true,
		onDone: func(resp *clientv3.TxnResponse) {
			kvs := resp.Responses[1].GetResponseRange().GetKvs()
			if nl.key == key && len(kvs) == 1 {
				nl.createRev = kvs[0].CreateRevision
			}
		}})
}

func (n *Node) startConvert(nl *nodeLock, mode Mode, try, failOn bool) {
	key := nl.key
	w := lockWrite{track: true}
	val := mustJSON(requestValue{Resource: nl.res, Mode: mode, Recovery: nl.recovery, NoQueue: try, FailOnDeadlock: failOn})
	if nl.lvbDirty && (nl.granted == PW || nl.granted == EX) && !Covers(mode, PW) {
		put := n.lvbWrite(nl)
		w.ops = append(w.ops, put)
		nl.lvbDirty = false
		// Should a close cut the down-conversion short, Close writes the
		// value block back, but only while the request still carries the
		// value it had before (the conversion did not happen: this node
		// still holds PW or EX, so nobody wrote a newer value block).
		w.back = &closeLVB{put: put, req: key, unless: clientv3.Compare(clientv3.Value(key), "=", nl.reqVal)}
	}
	w.ops = append(w.ops, clientv3.OpPut(key, val))
	nl.want, nl.reqVal = mode, val
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", nl.createRev)
	w.keyCmp = &cmp
	n.write(nl, w)
}

func (n *Node) startRelease(nl *nodeLock) {
	n.write(nl, n.releaseWrite(nl))
}

// releaseWrite detaches nl's request from it and returns the write that
// gives the request up (with nl's value block when it is dirty).
func (n *Node) releaseWrite(nl *nodeLock) lockWrite {
	key := nl.key
	w := lockWrite{onDone: func(*clientv3.TxnResponse) { delete(n.byKey, key) }}
	stillOurs := clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	if nl.createRev != 0 {
		// Guarded on the request's creation: an attempt sent again after
		// one that landed (a leader change) finds the request gone and
		// writes no value block over one a later holder wrote.
		stillOurs = clientv3.Compare(clientv3.CreateRevision(key), "=", nl.createRev)
		w.keyCmp, w.release = &stillOurs, true
	}
	if nl.held && nl.lvbDirty && (nl.granted == PW || nl.granted == EX) {
		put := n.lvbWrite(nl)
		w.ops = append(w.ops, put)
		// A release cut short by a close: Close writes the value block if
		// the request is still there (the release did not happen, so no
		// one else wrote one since).
		w.back = &closeLVB{put: put, req: key, unless: stillOurs}
	}
	w.ops = append(w.ops, clientv3.OpDelete(key))
	// Detach the request at once: its grant is gone for local users, and
	// a new request may be queued while the delete is in flight (it waits
	// behind the old one in the cluster's queue, like anyone else's).
	nl.key, nl.held, nl.blocked, nl.lvbDirty, nl.createRev, nl.draining, nl.reqVal = "", false, false, false, 0, false, ""
	return w
}

// maxReleaseBatch bounds the releases sent in one etcd transaction
// (releaseBatch): each is a nested transaction of its own, and etcd
// refuses a transaction of more operations than its --max-txn-ops (128
// by default).
const maxReleaseBatch = 64

// releaseBatch gives up the requests of nls, idle cached locks, in etcd
// transactions of up to maxReleaseBatch releases each instead of one
// each: evict trims many locks at once (MaxCached/16), and each
// transaction is a sync of etcd's log and an event every node's replica
// applies. A request whose creation revision is not known yet is
// released on its own (its release is not guarded on it).
func (n *Node) releaseBatch(nls []*nodeLock) {
	var batch []*nodeLock
	var ws []lockWrite
	flush := func() {
		if len(batch) == 1 {
			n.write(batch[0], ws[0])
		} else if len(batch) > 1 {
			n.writeBatch(batch, ws)
		}
		batch, ws = nil, nil
	}
	for _, nl := range nls {
		if nl.createRev == 0 {
			n.startRelease(nl)
			continue
		}
		batch, ws = append(batch, nl), append(ws, n.releaseWrite(nl))
		if len(batch) == maxReleaseBatch {
			flush()
		}
	}
	flush()
}

// maxWriteAttempt bounds one attempt at a lock-table write.
const maxWriteAttempt = 5 * time.Second

// lockWrite is one lock-table write of a node-level lock.
type lockWrite struct {
	ops []clientv3.Op
	// keyCmp, when set, applies ops only while it holds (the request is
	// still the one nl created).
	keyCmp *clientv3.Cmp
	// release: the write gives the request up, so a failed keyCmp means
	// it is gone already (an earlier attempt, or a force-release).
	release bool
	// track marks nl busy while the write is in flight.
	track bool
	// onDone runs (under mu) once the write landed.
	onDone func(resp *clientv3.TxnResponse)
	// back is the value block the write gives back, handed to Close
	// should a close cut the write short.
	back *closeLVB
}

// write runs w, guarded by the member's lease, in the background and
// drives nl again when it is done. Transport errors are retried (every
// write is idempotent), each attempt bounded (Config.WriteAttemptTimeout,
// doubling) and sent again at once when the etcd leader changes
// (Config.LeaderChanges), so that one caught by an etcd leader election is
// sent again as soon as a new leader serves, until the self-fence
// deadline; a failed guard means the lease is gone and fences the node.
func (n *Node) write(nl *nodeLock, w lockWrite) {
	guard := n.guard()
	if w.track {
		nl.busy = true
	}
	n.wg.Add(1)
	n.writes.Add(1)
	ops := w.ops
	if w.keyCmp != nil {
		ops = []clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{*w.keyCmp}, ops, nil)}
	}
	go func() {
		defer n.wg.Done()
		defer n.writes.Done()
		resp, err := n.commitRetrying(guard, ops, "resource", nl.res)
		n.mu.Lock()
		defer n.mu.Unlock()
		if w.track {
			nl.busy = false
			n.revCond.Broadcast() // Lock.Settle waits for this
		}
		switch {
		case !n.landed(resp, err, w):
			// Left to Close, or the node is fenced.
		case w.keyCmp != nil && !resp.Responses[0].GetResponseTxn().Succeeded && w.release:
			// Released already (an earlier attempt landed) or removed
			// behind our back: either way it is gone.
			if w.onDone != nil {
				w.onDone(resp)
			}
		case w.keyCmp != nil && !resp.Responses[0].GetResponseTxn().Succeeded:
			// The request was removed behind our back (force-release).
			n.log.Warn("lock request vanished; dropping the cached lock", "resource", nl.res)
			delete(n.byKey, nl.key)
			nl.key, nl.held, nl.blocked, nl.createRev, nl.reqVal = "", false, false, 0, ""
			for u := range nl.users {
				u.released = true
			}
			clear(nl.users)
			if nl.blockCh != nil {
				close(nl.blockCh)
				nl.blockCh = nil
			}
		default:
			if w.onDone != nil {
				w.onDone(resp)
			}
		}
		n.drive(nl)
		if w.track && nl.key != "" && nl.held && !nl.busy && len(nl.users) == 0 && len(nl.waiters) == 0 {
			// The grant reaches local users through the watch, often
			// before the write's answer: a lock its users released
			// meanwhile was busy then, and becomes idle only now.
			n.mayIdle++
			n.evict()
		}
	}()
}

// commitRetrying commits ops guarded by guard, retrying as write says
// until it lands, the node closes or is fenced; what and who name the
// write in the log.
func (n *Node) commitRetrying(guard clientv3.Cmp, ops []clientv3.Op, what string, who any) (*clientv3.TxnResponse, error) {
	var err error
	var resp *clientv3.TxnResponse
	timeout := n.cfg.WriteAttemptTimeout
	for try := 0; try < 1000; try++ {
		ctx, cancel := attempt.Context(n.ctx, timeout, n.cfg.LeaderChanges)
		resp, err = n.cfg.Client.Txn(ctx).If(guard).Then(ops...).Commit()
		changed := err != nil && attempt.LeaderChanged(ctx)
		cancel()
		n.etcdWrites.Add(1)
		if err == nil || n.ctx.Err() != nil {
			break
		}
		n.mu.Lock()
		dead := n.alive() != nil
		n.mu.Unlock()
		if dead {
			break
		}
		if changed {
			// A new leader serves: what the old one was handed is
			// lost, send it again now.
			n.log.Debug("etcd leader changed during a lock request write; sending it again", what, who)
			continue
		}
		timeout = min(2*timeout, maxWriteAttempt)
		n.log.Warn("lock request write failed; retrying", what, who, "error", err)
		time.Sleep(time.Duration(min(try+1, 20)) * 10 * time.Millisecond)
	}
	return resp, err
}

// landed settles what every lock-table write of ws may end in: an error
// (the value blocks it gave back are left to Close when Close stopped its
// retries; otherwise the node is fenced) or a failed lease guard (fenced).
// It reports whether resp is an answer the caller goes on with. Under mu.
func (n *Node) landed(resp *clientv3.TxnResponse, err error, ws ...lockWrite) bool {
	switch {
	case err != nil:
		if errors.Is(n.fenced, ErrClosed) {
			for _, w := range ws {
				if w.back != nil {
					// Close stopped the retries; it writes the value
					// block back before it withdraws the requests.
					n.closeLVBs = append(n.closeLVBs, *w.back)
				}
			}
		} else if n.ctx.Err() == nil {
			n.fence(fmt.Errorf("%w: lock request write failed: %v", ErrLeaseLost, err))
		}
		return false
	case !resp.Succeeded:
		n.fence(fmt.Errorf("%w: member key %s no longer carries lease %x", ErrLeaseLost, n.cfg.Member.MemberKey(), n.cfg.Member.LeaseID()))
		return false
	}
	return true
}

// writeBatch runs the releases ws of nls (releaseWrite, each guarded on
// its request's creation) as one transaction guarded by the member's
// lease, in the background and retried as write does, and drives each
// lock again when it is done. A release whose request is gone already
// (an earlier attempt, a force-release) is done all the same.
func (n *Node) writeBatch(nls []*nodeLock, ws []lockWrite) {
	guard := n.guard()
	n.wg.Add(1)
	n.writes.Add(1)
	ops := make([]clientv3.Op, len(ws))
	for i, w := range ws {
		ops[i] = clientv3.OpTxn([]clientv3.Cmp{*w.keyCmp}, w.ops, nil)
	}
	go func() {
		defer n.wg.Done()
		defer n.writes.Done()
		resp, err := n.commitRetrying(guard, ops, "releases", len(ws))
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.landed(resp, err, ws...) {
			for _, w := range ws {
				w.onDone(resp)
			}
		}
		for _, nl := range nls {
			n.drive(nl)
		}
	}()
}

// checkDeadlock reports (and withdraws w) when w's request has been the
// victim of a wait-for cycle (Table.DeadlockVictims: the same request on
// every node) for longer than the grace period. Only the victim's waiters
// fail; the other requests of the cycle keep waiting and are granted once
// the victim's holder releases or its conversion is withdrawn.
func (n *Node) checkDeadlock(nl *nodeLock, w *waiter) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w.done {
		return false
	}
	victim := nl.key != "" && slices.Contains(n.rep.Table.DeadlockVictims(), nl.key)
	now := n.cfg.Clock.Now()
	if !victim {
		w.cycle = time.Time{}
		return false
	}
	if w.cycle.IsZero() {
		w.cycle = now
		return false
	}
	if now.Sub(w.cycle) < n.cfg.DeadlockGrace {
		return false
	}
	n.removeWaiter(nl, w)
	w.done = true
	n.drive(nl)
	return true
}
