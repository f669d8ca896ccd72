package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// glock is the store's cached hold on one lock-manager lock, as GFS2's
// glocks: the node keeps the grant after its local users are done and
// reuses it without asking the lock manager, until a blocking callback
// says another node waits. Then it writes back (checkpoints the journal if
// it changed anything under the lock), publishes the generation in the
// value block and releases. The metadata blocks the lock guards are cached
// with it; the generation in the value block tells a re-acquirer whether
// its cache is still good.
type glock struct {
	s     *Store
	name  string
	class int    // lock order: class, then id
	id    uint64 // inode number, allocation group, slot

	rw sync.RWMutex // local users: R for Shared, W for Exclusive

	// used is the store's use tick at the last grant or use of the
	// cached grant (shrink gives up the least recently used first).
	used atomic.Int64

	mu   sync.Mutex
	hold Lock // the cached grant; nil when not held from the lock manager
	// dropped is closed when this node gives hold up itself (dropLocked),
	// which ends its watch.
	dropped chan struct{}
	gen     uint64            // generation of the cached contents
	blocks  map[uint64][]byte // cached metadata blocks guarded by this lock
	dirty   uint64            // last transaction that changed what the lock guards
	asking  chan struct{}     // closed when a local user's plain request to the lock manager ends
	// holdUntil is when a blocking callback on the cached grant may be
	// answered at the earliest (keepShared); zero for at once.
	holdUntil time.Time

	// A recovery grant: asked for by the recovery coordinator's users
	// only, granted over a dead node's orphan and ahead of the plain
	// requests queued behind it, held while one local user holds the
	// local side exclusively, never cached. It is asked for beside (never
	// behind) a plain request of this node that waits on the orphan.
	rhold Lock
	rbusy chan struct{} // closed when a recovery request fails or its grant is given back

	// gone: prune removed g from the store's map; the next acquire puts
	// it back (revive) or fails with errGlockGone.
	gone bool
}

// Lock classes, in lock order.
const (
	classInode = 1
	classAG    = 2
	classSlot  = 3
	// classReplay is the store's one replay lock (takeReplayLock), taken
	// before any slot's.
	classReplay = 4
)

func (s *Store) glockFor(class int, id uint64) *glock {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	key := glockKey{class, id}
	g := s.glocks[key]
	if g == nil {
		var name string
		switch class {
		case classInode:
			name = fmt.Sprintf("%s/i/%x", s.lockPrefix, id)
		case classAG:
			name = fmt.Sprintf("%s/ag/%d", s.lockPrefix, id)
		case classSlot:
			name = fmt.Sprintf("%s/slot/%d", s.lockPrefix, id)
		case classReplay:
			name = s.lockPrefix + "/replay"
		}
		g = &glock{s: s, name: name, class: class, id: id, blocks: map[uint64][]byte{}}
		s.glocks[key] = g
	}
	return g
}

type glockKey struct {
	class int
	id    uint64
}

// before reports whether g comes before h in lock order.
func (g *glock) before(h *glock) bool {
	if g.class != h.class {
		return g.class < h.class
	}
	return g.id < h.id
}

// covers reports whether this node holds a cached plain grant of g that
// covers mode (a hint: it may be given up the next moment).
func (g *glock) covers(mode LockMode) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hold != nil && (g.hold.Mode() == Exclusive || mode == Shared)
}

// lockLocal takes the local side of g in mode; with try it fails at once.
func (g *glock) lockLocal(mode LockMode, try bool) bool {
	switch {
	case mode == Exclusive && try:
		return g.rw.TryLock()
	case mode == Exclusive:
		g.rw.Lock()
	case try:
		return g.rw.TryRLock()
	default:
		g.rw.RLock()
	}
	return true
}

func (g *glock) unlockLocal(mode LockMode) {
	if mode == Exclusive {
		g.rw.Unlock()
	} else {
		g.rw.RUnlock()
	}
}

// acquire takes g in mode for a local user: the local side first, then the
// lock manager's grant unless a cached one covers mode. With try it fails
// with ErrWouldBlock instead of waiting. A recovery user (recovery set:
// the coordinator's replay and its records' handlers) takes the local side
// exclusively and uses the cached grant if it covers mode, else a
// recovery grant (acquireRecovery); put must be told the same recovery.
func (g *glock) acquire(ctx context.Context, mode LockMode, try, recovery bool) error {
	if recovery {
		return g.acquireRecovery(ctx, mode, try)
	}
	for {
		if !g.lockLocal(mode, try) {
			return ErrWouldBlock
		}
		g.mu.Lock()
		if g.gone && !g.revive() {
			g.mu.Unlock()
			g.unlockLocal(mode)
			return errGlockGone
		}
		if g.hold != nil && (g.hold.Mode() == Exclusive || mode == Shared) {
			g.mu.Unlock()
			g.s.stats.cachedLocks.Add(1)
			g.used.Store(g.s.useTick.Add(1))
			return nil
		}
		if g.hold != nil {
			// A PR grant that must become EX: give it up and ask anew
			// (the local side is held exclusively, so nobody uses it),
			// rather than convert in place, which could deadlock with
			// another PR holder converting too.
			if err := g.dropLocked(context.Background()); err != nil {
				g.mu.Unlock()
				g.unlockLocal(mode)
				return err
			}
		}
		if g.asking != nil || g.rbusy != nil {
			// Another local user is asking the lock manager, or a
			// recovery user asks or holds the lock: wait for it without
			// holding the local side.
			ch := g.asking
			if ch == nil {
				ch = g.rbusy
			}
			if err := g.leaveAndWait(ctx, mode, try, ch); err != nil {
				return err
			}
			continue
		}
		done := make(chan struct{})
		g.asking = done
		g.mu.Unlock()
		// The local side is not held while the lock manager is asked: a
		// local user waiting for a grant (perhaps behind a dead node's
		// orphan) must not stand in the way of the recovery.
		g.unlockLocal(mode)
		l, err := g.ask(ctx, mode, try)
		g.mu.Lock()
		g.asking = nil
		close(done)
		if err != nil {
			g.mu.Unlock()
			return g.lockErr(ctx, err)
		}
		g.s.stats.lockRequests.Add(1)
		if g.hold != nil || g.rhold != nil {
			// Cannot happen (asking is exclusive and a recovery grant
			// conflicts with ours), but never leak a grant.
			g.mu.Unlock()
			l.Release()
			continue
		}
		g.takeLVB(l)
		g.hold = l
		g.holdUntil = time.Time{}
		g.used.Store(g.s.useTick.Add(1))
		g.s.noteHeld(g, true)
		g.dropped = make(chan struct{})
		go g.watch(l, g.dropped)
		g.mu.Unlock()
		// Take the local side again; the grant normally still covers.
	}
}

// localAsk says whether a local user is asking the lock manager for g
// (a plain or a recovery request) right now.
func (g *glock) localAsk() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.asking != nil || g.rbusy != nil
}

// leaveAndWait lets go of mu and the local side (held in mode) and waits
// for ch, another user's request, to end; with try it fails at once.
func (g *glock) leaveAndWait(ctx context.Context, mode LockMode, try bool, ch <-chan struct{}) error {
	g.mu.Unlock()
	g.unlockLocal(mode)
	if try {
		return ErrWouldBlock
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// ask asks the lock manager for a plain grant of g. While a dead node
// holds g (an orphan, when the Locker can tell: OrphanReporter) the
// request is not left queued: it would wait until the recovery ends
// anyway, and a request queued there (a conversion above all) can stand
// in the way of the recovery's own. It is asked again once the orphan is
// released, as the DLM holds normal requests on a dead node's resources
// back until its recovery ends. A queued request is checked every
// Config.OrphanCheck; a held-back one looks again every eighth of it (a
// look is a map lookup in the lock table's replica), so that it is asked
// for soon after the recovery releases the orphan: a client retrying a
// dead node's request waits for exactly that.
func (g *glock) ask(ctx context.Context, mode LockMode, try bool) (Lock, error) {
	orphans, tells := g.s.cfg.Locks.(OrphanReporter)
	if try || !tells {
		return g.s.cfg.Locks.Lock(ctx, g.name, mode, LockOptions{Try: try})
	}
	for {
		if orphans.Orphaned(g.name, mode) {
			t := g.s.clk.NewTimer(max(g.s.cfg.OrphanCheck/8, time.Millisecond))
			select {
			case <-t.C():
			case <-ctx.Done():
				t.Stop()
				return nil, context.Cause(ctx)
			}
			continue
		}
		lctx, cancel := context.WithCancelCause(ctx)
		tick := g.s.clk.NewTicker(g.s.cfg.OrphanCheck)
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-tick.C():
					if orphans.Orphaned(g.name, mode) {
						cancel(errOrphaned)
						return
					}
				case <-stop:
					return
				}
			}
		}()
		l, err := g.s.cfg.Locks.Lock(lctx, g.name, mode, LockOptions{})
		close(stop)
		tick.Stop()
		withdrawn := err != nil && errors.Is(context.Cause(lctx), errOrphaned) && ctx.Err() == nil
		cancel(nil)
		if !withdrawn {
			return l, err
		}
	}
}

// errOrphaned withdraws a plain request that waits behind a dead node's
// orphan (glock.ask).
var errOrphaned = errors.New("store: the lock is held by a dead node until its recovery ends")

// acquireRecovery takes g for a recovery user, as the DLM grants the
// recovery coordinator's requests: a cached grant of this node that covers
// mode is used as it is; otherwise a recovery grant is asked for, which the
// lock manager gives over a dead node's orphan and ahead of the plain
// requests queued behind it. It never waits for a plain request of this
// node (g.asking): that one may be queued behind the very orphan the
// recovery must get past. Local plain users that hold the local side
// while they wait for another lock give way (Store.beginRecovery).
func (g *glock) acquireRecovery(ctx context.Context, mode LockMode, try bool) error {
	for {
		if mode == Shared {
			// A read on this node's cached grant goes beside the node's
			// other readers: a plain transaction that reads the lock too
			// (a directory on every path) may be stuck in its commit
			// behind a dead node's lock until the recovery ends.
			if !g.lockLocal(Shared, true) {
				if try {
					return ErrWouldBlock
				}
				done := g.s.noteWait("local lock", g.name, "held by a transaction of this node")
				g.rw.RLock()
				done()
			}
			g.mu.Lock()
			if g.hold != nil && g.rhold == nil {
				g.mu.Unlock()
				return nil
			}
			g.mu.Unlock()
			g.unlockLocal(Shared)
			// No cached grant: a plain PR grant, asked for without
			// waiting, when no dead node holds the lock in a mode that
			// conflicts. It goes beside the live nodes' PR grants (the
			// directories on every path), where a recovery grant, always
			// EX, would call each of them back, a hand-over in the path
			// of every request the dead node held. It does not wait, so
			// a node dying meanwhile cannot hold the recovery up.
			if orphans, ok := g.s.cfg.Locks.(OrphanReporter); ok && !orphans.Orphaned(g.name, Shared) {
				err := g.acquire(ctx, Shared, true, false)
				if err == nil {
					return nil
				}
				if !errors.Is(err, ErrWouldBlock) {
					return err
				}
			}
		}
		if !g.lockLocal(Exclusive, true) {
			if try {
				return ErrWouldBlock
			}
			done := g.s.noteWait("local lock", g.name, "held by a transaction of this node")
			g.rw.Lock()
			done()
		}
		g.mu.Lock()
		if g.gone && !g.revive() {
			g.mu.Unlock()
			g.unlockLocal(Exclusive)
			return errGlockGone
		}
		if g.hold != nil && g.rhold == nil && mode == Shared {
			// Cached since the look above: take it shared.
			g.mu.Unlock()
			g.unlockLocal(Exclusive)
			continue
		}
		if g.rhold != nil || g.hold != nil && g.hold.Mode() == Exclusive {
			g.mu.Unlock()
			return nil
		}
		if g.hold != nil {
			// Our PR grant would stand in the way of the recovery's EX.
			if err := g.dropLocked(context.Background()); err != nil {
				g.mu.Unlock()
				g.unlockLocal(Exclusive)
				return err
			}
		}
		if g.rbusy != nil {
			// Another recovery user asks: wait for it to be done.
			done := g.s.noteWait("recovery lock", g.name, "another recovery user of this node has it or asks for it")
			err := g.leaveAndWait(ctx, Exclusive, try, g.rbusy)
			done()
			if err != nil {
				return err
			}
			continue
		}
		g.rbusy = make(chan struct{})
		g.mu.Unlock()
		// Not holding the local side while asking: a plain grant of this
		// node may arrive meanwhile and must be handed on when the
		// recovery request calls it back.
		g.unlockLocal(Exclusive)
		done := g.s.noteWait("recovery lock", g.name, "")
		l, err := g.s.cfg.Locks.Lock(ctx, g.name, Exclusive, LockOptions{Try: try, Recovery: true})
		done()
		g.mu.Lock()
		if err == nil && (g.hold != nil || g.rhold != nil) {
			// Cannot happen (our own grants conflict), but never leak one.
			err = l.Release()
			if err == nil {
				err = fmt.Errorf("store: lock %s granted twice to this node", g.name)
			}
		}
		if err != nil {
			close(g.rbusy)
			g.rbusy = nil
			g.mu.Unlock()
			return g.lockErr(ctx, err)
		}
		g.s.stats.lockRequests.Add(1)
		g.mu.Unlock()
		// Local users in the meantime only looked and went to wait for
		// rbusy (readers on a cached grant end soon): the local side is
		// free again soon, also for a try. The grant is recorded only
		// under it, so whoever holds rhold holds the local side
		// exclusively (put relies on it).
		g.rw.Lock()
		g.mu.Lock()
		g.takeLVB(l)
		g.blocks = map[uint64][]byte{} // recovery grants are never cached
		g.rhold = l
		g.mu.Unlock()
		return nil
	}
}

// lockErr maps the lock manager's error for a request of g.
func (g *glock) lockErr(ctx context.Context, err error) error {
	if errors.Is(err, ErrWouldBlock) {
		return ErrWouldBlock
	}
	if ctx.Err() != nil {
		if c := context.Cause(ctx); c != nil && !errors.Is(err, c) {
			return fmt.Errorf("store: lock %s: %w (%w)", g.name, err, c)
		}
	}
	return fmt.Errorf("store: lock %s: %w", g.name, err)
}

// takeLVB reads the generation in a new grant's value block: the cached
// blocks are kept only when nobody changed what the lock guards since.
func (g *glock) takeLVB(l Lock) {
	lvb, valid := l.LVB()
	gen := uint64(0)
	if valid && len(lvb) >= 8 {
		gen = binary.LittleEndian.Uint64(lvb)
	}
	if !valid || gen == 0 || gen != g.gen {
		// Someone changed what the lock guards (or died holding it EX):
		// the cache is stale.
		g.blocks = map[uint64][]byte{}
		if !valid || gen == 0 {
			gen = rand.Uint64() | 1
		}
		g.gen = gen
	}
}

// put ends a local user's hold; recovery as given to acquire. A recovery
// grant is given back at once (after the journal that holds its changes is
// checkpointed).
func (g *glock) put(mode LockMode, recovery bool) error {
	var err error
	if recovery {
		// A recovery user holds the local side exclusively when it holds
		// the recovery grant (or asked Exclusive); a Shared one on this
		// node's cached grant holds it shared, which excludes a
		// recovery grant.
		g.mu.Lock()
		if g.rhold != nil {
			mode = Exclusive
			err = g.dropRecoveryLocked()
		}
		g.mu.Unlock()
	}
	g.unlockLocal(mode)
	return err
}

// dropRecoveryLocked writes back and gives the recovery grant back, under
// mu with the local side held exclusively by the caller.
func (g *glock) dropRecoveryLocked() error {
	h := g.rhold
	if h == nil {
		return nil
	}
	if err := g.writeBack(context.Background(), h, false); err != nil {
		return err
	}
	g.rhold = nil
	g.blocks = map[uint64][]byte{}
	if g.rbusy != nil {
		close(g.rbusy)
		g.rbusy = nil
	}
	g.s.stats.lockReleases.Add(1)
	return h.Release()
}

// watch waits for the blocking callback on hold (or the store closing)
// and then hands the lock on once local users are done. A hand-over whose
// write-back fails (committed blocks the volume did not take:
// ErrUnwritten) keeps the grant and is tried again, backing off up to
// handOnRetryMax, unless the node is fenced: handing it on would let
// another node read blocks this node has not written.
func (g *glock) watch(hold Lock, dropped <-chan struct{}) {
	select {
	case <-hold.Blocking():
		// A grant this node gave up says so on Blocking too, and dropped
		// was closed before it was released: a select between the two
		// would go on half the time, into handOn, whose wait for the
		// local side (exclusive) would fail other users' tries, as long
		// as the scheduler leaves it queued.
		select {
		case <-dropped:
			return
		default:
		}
	case <-dropped:
		return // given up by this node (a PR grant made EX, shrink)
	case <-g.s.closing:
		return // Close drops every hold itself
	}
	// A grant kept for a while (keepShared) is kept until then: read
	// once, so that uses after the callback do not keep it longer.
	g.mu.Lock()
	until := g.holdUntil
	g.mu.Unlock()
	if d := until.Sub(g.s.clk.Now()); d > 0 {
		t := g.s.clk.NewTimer(d)
		select {
		case <-t.C():
		case <-g.s.closing:
			t.Stop()
			return
		}
	}
	wait := handOnRetryMin
	for !g.handOn(hold) {
		t := g.s.clk.NewTimer(wait)
		select {
		case <-t.C():
		case <-g.s.closing:
			t.Stop()
			return
		}
		wait = min(2*wait, handOnRetryMax)
	}
}

// keepShared makes this node keep g's cached grant, which a local user
// holds Shared now, for at least d from now before it answers a blocking
// callback on it, as GFS2's glock minimum hold time does: a node looking
// up name after name in a directory that another node keeps changing then
// takes the directory's lock once per d instead of once per name (the
// other node's next change takes it back at once otherwise). The other
// node waits at most d for it.
func (g *glock) keepShared(d time.Duration) {
	g.mu.Lock()
	if t := g.s.clk.Now().Add(d); g.hold != nil && t.After(g.holdUntil) {
		g.holdUntil = t
	}
	g.mu.Unlock()
}

// Backoff of a hand-over whose write-back failed (glock.watch).
const (
	handOnRetryMin = 100 * time.Millisecond
	handOnRetryMax = 5 * time.Second
)

// handOn drops hold once local users are done; false when its write-back
// failed and the grant is kept. Once the store is closing it leaves the
// grant to Close, which drops every hold under mu: a hand-over that got mu
// after Close went past it would write back through locks Close has
// released already (and log after the store's owner is gone).
func (g *glock) handOn(hold Lock) bool {
	g.rw.Lock()
	defer g.rw.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != hold {
		return true
	}
	select {
	case <-g.s.closing:
		return true
	default:
	}
	if err := g.dropLocked(context.Background()); err != nil {
		g.s.log.Warn("handing a lock on failed", "lock", g.name, "error", err)
		// A failed release still gave the grant up; a fenced node's
		// grants are the recovery's to release, a new attempt cannot.
		return g.hold != hold || errors.Is(err, ErrFenced)
	}
	return true
}

// dropLocked writes back and releases the cached grant, under mu with no
// local users but the caller.
func (g *glock) dropLocked(ctx context.Context) error { return g.releaseLocked(ctx, false) }

// forgetLocked is dropLocked for a grant given up while idle (shrink): the
// value block is written as zeros (no generation: whoever takes the lock
// next reads the blocks anew), which leaves no value block in the lock
// table, and the cached blocks are dropped.
func (g *glock) forgetLocked(ctx context.Context) error {
	if err := g.releaseLocked(ctx, true); err != nil {
		return err
	}
	g.blocks = map[uint64][]byte{}
	return nil
}

func (g *glock) releaseLocked(ctx context.Context, forget bool) error {
	h := g.hold
	if h == nil {
		return nil
	}
	if err := g.writeBack(ctx, h, forget); err != nil {
		return err
	}
	g.hold = nil
	if g.dropped != nil {
		close(g.dropped)
		g.dropped = nil
	}
	g.s.noteHeld(g, false)
	g.s.stats.lockReleases.Add(1)
	return h.Release()
}

// writeBack makes what changed under grant h safe to hand on: the journal
// checkpointed past it (within ctx), the generation in the value block
// (zero with forget: nobody's cache of the blocks counts as current).
func (g *glock) writeBack(ctx context.Context, h Lock, forget bool) error {
	if g.s.jr != nil && g.dirty > g.s.jr.checkpointed.Load() {
		// The journal holds images of blocks this lock guards: they must
		// be in place and the journal past them before another node may
		// change them, or a replay of this journal would undo its work.
		if err := g.s.checkpoint(ctx); err != nil {
			return err
		}
	}
	if h.Mode() == Exclusive {
		var b [8]byte
		if !forget {
			binary.LittleEndian.PutUint64(b[:], g.gen)
		}
		if err := h.SetLVB(b[:]); err != nil {
			return err
		}
	}
	return nil
}

// modified records, under the caller's EX hold, that g's contents changed
// in a committed transaction: a new generation for the value block.
func (g *glock) modified(seq uint64) {
	g.mu.Lock()
	g.gen++
	if g.gen == 0 {
		g.gen = 1
	}
	g.dirty = seq
	g.mu.Unlock()
}

// cached returns the cached copy of blk, if any.
func (g *glock) cached(blk uint64) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.blocks[blk]
}

func (g *glock) cache(blk uint64, b []byte) {
	g.mu.Lock()
	if g.hold != nil && g.rhold == nil {
		g.blocks[blk] = b
	}
	g.mu.Unlock()
}

func (g *glock) uncache(blk uint64) {
	g.mu.Lock()
	delete(g.blocks, blk)
	g.mu.Unlock()
}

// use checks the fencing of g's grant right before I/O under it.
func (g *glock) use() error {
	g.mu.Lock()
	h := g.hold
	if g.rhold != nil {
		h = g.rhold
	}
	g.mu.Unlock()
	if h == nil {
		return fmt.Errorf("store: write under lock %s that is not held", g.name)
	}
	if err := h.Use(); err != nil {
		return fmt.Errorf("store: lock %s: %w", g.name, err)
	}
	return nil
}

// cachedBlock returns blk from g's cache when g's grant is held (cached)
// in a mode that covers Shared and no local user holds it exclusively
// (one that does is waited for when wait, else nil): what an unlocked
// reader may use instead of taking the lock.
func (g *glock) cachedBlock(blk uint64, wait bool) []byte {
	if wait {
		g.rw.RLock()
	} else if !g.rw.TryRLock() {
		return nil
	}
	defer g.rw.RUnlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold == nil || g.rhold != nil {
		return nil
	}
	b := g.blocks[blk]
	if b != nil {
		// A use like any other to the shrink, which gives up the
		// grants used least lately: a stat answered from the caches
		// (an ls -l, a web node's stat of every file it serves) would
		// otherwise leave its grants looking idle since they were
		// taken, and they would go first.
		g.used.Store(g.s.useTick.Add(1))
	}
	return b
}
