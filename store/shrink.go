package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"
)

// DefaultMaxCachedLocks is Config.MaxCachedLocks's default: a directory
// of 10,000 entries listed with every entry's details stays cached whole.
// Every node's copy of the lock table holds every node's grants (about 40
// bytes each in the lock manager's checkpoint, written in parts when it
// outgrows one etcd request: dlm.Config.CheckpointPartBytes).
const DefaultMaxCachedLocks = 12288

// noteHeld notes that this node now keeps g's plain grant (held) or gave
// it up, and kicks shrinkLoop past Config.MaxCachedLocks.
func (s *Store) noteHeld(g *glock, held bool) {
	s.heldMu.Lock()
	if s.heldSet == nil {
		s.heldSet = map[*glock]struct{}{}
	}
	if held {
		s.heldSet[g] = struct{}{}
	} else {
		delete(s.heldSet, g)
	}
	n := len(s.heldSet)
	s.heldMu.Unlock()
	s.held.Store(int64(n))
	if held && s.cfg.MaxCachedLocks > 0 && n > s.cfg.MaxCachedLocks {
		select {
		case s.shrinkKick <- struct{}{}:
		default:
		}
	}
}

// shrinkLoop runs shrink whenever noteHeld kicks it, and prune when the
// glocks of locks this node does not hold are more than pruneSlack (looked
// at then and every pruneEvery), until the store closes.
func (s *Store) shrinkLoop() {
	defer s.bg.Done()
	tick := s.clk.NewTicker(pruneEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-s.shrinkKick:
			if n := s.shrink(); n > 0 {
				s.log.Debug("gave up idle lock grants", "count", n, "kept", s.held.Load())
			}
		case <-tick.C():
		}
		s.gmu.Lock()
		idle := len(s.glocks) - int(s.held.Load())
		s.gmu.Unlock()
		if idle > s.pruneSlack() {
			n := s.prune()
			s.log.Debug("pruned idle lock structures", "count", n)
		}
	}
}

// shrink gives up the cached grants of the inode locks this node used
// least lately, idle ones only (no local user, none asking, no recovery
// grant), until it keeps 63/64 of Config.MaxCachedLocks (small steps: each
// grant given up is a lock-manager release, an etcd write, and a burst of
// them would stand in the way of other nodes' requests). The journal is
// checkpointed once first when one of them guards blocks not in place;
// then each is written back and released like a hand-over, its value
// block zeroed (glock.forgetLocked: no generation left in the lock table)
// and its cached blocks dropped. It returns how many it gave up. A grant
// given up is asked for again at its next use.
func (s *Store) shrink() int {
	limit := s.cfg.MaxCachedLocks
	over := int(s.held.Load()) - (limit - limit/64)
	if over <= 0 || s.jr == nil {
		return 0
	}
	// Each one's last use is read once: users go on meanwhile, and a
	// sort must see one order.
	type cand struct {
		g    *glock
		used int64
	}
	s.heldMu.Lock()
	byUse := make([]cand, 0, len(s.heldSet))
	for g := range s.heldSet {
		if g.class == classInode {
			byUse = append(byUse, cand{g, g.used.Load()})
		}
	}
	s.heldMu.Unlock()
	slices.SortFunc(byUse, func(a, b cand) int { return cmp.Compare(a.used, b.used) })
	idle := func(g *glock) bool {
		return g.hold != nil && g.asking == nil && g.rhold == nil && g.rbusy == nil
	}
	var victims []*glock
	dirty := false
	done := s.jr.checkpointed.Load()
	for _, c := range byUse {
		g := c.g
		if len(victims) == over {
			break
		}
		g.mu.Lock()
		if idle(g) {
			victims = append(victims, g)
			dirty = dirty || g.dirty > done
		}
		g.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CommitWriteTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	if dirty {
		// One checkpoint for them all: each write-back below then finds
		// its blocks in place.
		if err := s.checkpoint(ctx); err != nil {
			s.log.Warn("giving up idle lock grants: checkpoint failed; they stay cached", "error", err)
			return 0
		}
	}
	n := 0
	for _, g := range victims {
		if ctx.Err() != nil {
			break
		}
		if !g.rw.TryLock() {
			continue // a local user came meanwhile
		}
		g.mu.Lock()
		if idle(g) {
			if err := g.forgetLocked(ctx); err != nil {
				s.log.Warn("giving up an idle lock grant failed", "lock", g.name, "error", err)
			} else {
				n++
			}
		}
		g.mu.Unlock()
		g.rw.Unlock()
	}
	return n
}

// prune removes from the store's map the structures (glocks) of inode
// locks this node neither holds nor asks for, that no local user holds,
// and whose changes are all in place (checkpointed); their cached blocks,
// which no grant vouches for any more, go with them. A node keeps a
// glock for every file it ever touched otherwise, for its whole life: a
// web node makes a file per idempotency key. A glock a caller got from
// glockFor before it was removed, and locks only after, is put back by
// that acquire (revive), or fails it with errGlockGone when another took
// its place meanwhile: a transaction then starts over. It returns how many
// it removed.
func (s *Store) prune() int {
	done := ^uint64(0)
	if s.jr != nil {
		done = s.jr.checkpointed.Load()
	}
	// The map is held for a copy of its inode glocks only, then for one
	// glock at a time: lookups go on meanwhile.
	s.gmu.Lock()
	gs := make([]*glock, 0, len(s.glocks))
	for key, g := range s.glocks {
		if key.class == classInode {
			gs = append(gs, g)
		}
	}
	s.gmu.Unlock()
	n := 0
	for _, g := range gs {
		s.gmu.Lock()
		key := glockKey{g.class, g.id}
		if s.glocks[key] == g && g.rw.TryLock() {
			if g.mu.TryLock() {
				if g.hold == nil && g.rhold == nil && g.asking == nil && g.rbusy == nil && g.dirty <= done {
					g.gone = true
					g.blocks = nil
					delete(s.glocks, key)
					n++
				}
				g.mu.Unlock()
			}
			g.rw.Unlock()
		}
		s.gmu.Unlock()
	}
	return n
}

// pruneSlack is how many glocks beyond the grants it holds a store keeps
// before it prunes (shrinkLoop): a prune looks at every glock (about 0.2 µs
// each, BenchmarkPrune20k), so it runs only when there is much to remove.
func (s *Store) pruneSlack() int { return max(1024, s.cfg.MaxCachedLocks/4) }

// pruneEvery is how often shrinkLoop looks whether to prune.
const pruneEvery = 10 * time.Second

// errGlockGone fails an acquire of a glock prune removed when another
// glock of the same lock took its place meanwhile: the caller looks the
// lock up again (a transaction starts over).
var errGlockGone = errors.New("store: lock structure pruned; look the lock up again")

// revive puts g, which prune removed, back in the store's map, unless
// another glock of its lock is there now (false). Called with g.mu held.
func (g *glock) revive() bool {
	s := g.s
	s.gmu.Lock()
	defer s.gmu.Unlock()
	key := glockKey{g.class, g.id}
	if cur := s.glocks[key]; cur != nil {
		return cur == g
	}
	s.glocks[key] = g
	g.gone = false
	g.blocks = map[uint64][]byte{}
	return true
}
