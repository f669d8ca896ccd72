package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
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

	mu      sync.Mutex
	hold    Lock              // nil when not held from the lock manager
	gen     uint64            // generation of the cached contents
	blocks  map[uint64][]byte // cached metadata blocks guarded by this lock
	dirty   uint64            // last transaction that changed what the lock guards
	recover bool              // hold is a recovery grant (never cached)
	asking  chan struct{}     // closed when a local user's request to the lock manager ends
	// recoverDone is closed when a recovery grant is given back.
	recoverDone chan struct{}
}

// Lock classes, in lock order.
const (
	classInode = 1
	classAG    = 2
	classSlot  = 3
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
// lock manager's grant unless a cached one covers mode. In recovery
// (recovery set) the lock may be an orphan of the dead node: it is tried
// as usual first (cached, free, or held by a live node), then as a
// recovery grant over the orphan (given back when the user is done), and
// only then waited for as usual.
func (g *glock) acquire(ctx context.Context, mode LockMode, try, recovery bool) error {
	if !recovery {
		return g.acquireOnce(ctx, mode, try, false)
	}
	err := g.acquireOnce(ctx, mode, true, false)
	if !errors.Is(err, ErrWouldBlock) {
		return err
	}
	err = g.acquireOnce(ctx, mode, true, true)
	if !errors.Is(err, ErrWouldBlock) || try {
		return err
	}
	return g.acquireOnce(ctx, mode, false, false)
}

func (g *glock) acquireOnce(ctx context.Context, mode LockMode, try, recovery bool) error {
	local := mode
	if recovery {
		local = Exclusive // a recovery grant is never shared with local users
	}
	for {
		if !g.lockLocal(local, try) {
			return ErrWouldBlock
		}
		g.mu.Lock()
		if g.hold != nil && !g.recover && !recovery && (g.hold.Mode() == Exclusive || mode == Shared) {
			g.mu.Unlock()
			g.s.stats.cachedLocks.Add(1)
			return nil
		}
		if g.hold != nil && g.recover == recovery && recovery {
			g.mu.Unlock()
			return nil
		}
		if g.hold != nil && local != Exclusive {
			// Held PR while a recovery grant is wanted elsewhere: not
			// ours to drop under a shared local hold.
			ch := g.recoverDone
			g.mu.Unlock()
			g.unlockLocal(local)
			if try || ch == nil {
				return ErrWouldBlock
			}
			select { // the recovery user gives the grant back, then look again
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		if g.hold != nil {
			// A PR grant that must become EX (or a recovery grant): give
			// it up and ask anew, rather than convert in place, which
			// could deadlock with another PR holder converting too.
			if err := g.dropLocked(); err != nil {
				g.mu.Unlock()
				g.unlockLocal(local)
				return err
			}
		}
		if g.asking != nil {
			// Another local user is asking the lock manager: wait for it
			// without holding the local side.
			ch := g.asking
			g.mu.Unlock()
			g.unlockLocal(local)
			if try {
				return ErrWouldBlock
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		done := make(chan struct{})
		g.asking = done
		g.mu.Unlock()
		// The local side is not held while the lock manager is asked: a
		// local user waiting for a grant (perhaps behind a dead node's
		// orphan) must not stand in the way of the recovery.
		g.unlockLocal(local)
		ask := mode
		if recovery {
			ask = Exclusive
		}
		l, err := g.s.cfg.Locks.Lock(ctx, g.name, ask, LockOptions{Try: try, Recovery: recovery})
		g.mu.Lock()
		g.asking = nil
		close(done)
		if err != nil {
			g.mu.Unlock()
			if errors.Is(err, ErrWouldBlock) {
				return ErrWouldBlock
			}
			return fmt.Errorf("store: lock %s: %w", g.name, err)
		}
		g.s.stats.lockRequests.Add(1)
		if g.hold != nil {
			// Cannot happen (asking is exclusive), but never leak a grant.
			g.mu.Unlock()
			l.Release()
			continue
		}
		lvb, valid := l.LVB()
		gen := uint64(0)
		if valid && len(lvb) >= 8 {
			gen = binary.LittleEndian.Uint64(lvb)
		}
		if !valid || gen == 0 || gen != g.gen {
			// Someone changed what the lock guards (or died holding it
			// EX): the cache is stale.
			g.blocks = map[uint64][]byte{}
			if !valid || gen == 0 {
				gen = rand.Uint64() | 1
			}
			g.gen = gen
		}
		g.hold, g.recover = l, recovery
		if recovery {
			g.recoverDone = make(chan struct{})
		} else {
			go g.watch(l)
		}
		g.mu.Unlock()
		// Take the local side again; the grant normally still covers.
	}
}

// put ends a local user's hold. A recovery grant is given back at once
// (after the journal that holds its changes is checkpointed).
func (g *glock) put(mode LockMode) error {
	var err error
	g.mu.Lock()
	if g.recover && g.hold != nil {
		err = g.dropLocked()
		g.blocks = map[uint64][]byte{}
		mode = Exclusive // taken exclusively (acquireOnce)
	}
	g.mu.Unlock()
	g.unlockLocal(mode)
	return err
}

// watch waits for the blocking callback on hold (or the store closing)
// and then hands the lock on once local users are done.
func (g *glock) watch(hold Lock) {
	select {
	case <-hold.Blocking():
	case <-g.s.closing:
		return // Close drops every hold itself
	}
	g.rw.Lock()
	defer g.rw.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != hold {
		return
	}
	if err := g.dropLocked(); err != nil {
		g.s.log.Warn("handing a lock on failed", "lock", g.name, "error", err)
	}
}

// dropLocked writes back and releases the grant, under mu with no local
// users but the caller.
func (g *glock) dropLocked() error {
	h := g.hold
	if h == nil {
		return nil
	}
	if g.s.jr != nil && g.dirty > g.s.jr.checkpointed.Load() {
		// The journal holds images of blocks this lock guards: they must
		// be in place and the journal past them before another node may
		// change them, or a replay of this journal would undo its work.
		if err := g.s.checkpoint(context.Background()); err != nil {
			return err
		}
	}
	if h.Mode() == Exclusive {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], g.gen)
		if err := h.SetLVB(b[:]); err != nil {
			return err
		}
	}
	g.hold, g.recover = nil, false
	if g.recoverDone != nil {
		close(g.recoverDone)
		g.recoverDone = nil
	}
	g.s.stats.lockReleases.Add(1)
	return h.Release()
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
	if g.hold != nil && !g.recover {
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
// in a mode that covers Shared and no local user holds it exclusively:
// what an unlocked reader may use instead of reading the device.
func (g *glock) cachedBlock(blk uint64) []byte {
	if !g.rw.TryRLock() {
		return nil
	}
	defer g.rw.RUnlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold == nil || g.recover {
		return nil
	}
	return g.blocks[blk]
}
