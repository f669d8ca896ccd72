package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"
)

// inodeLockAhead is how many free blocks after a new inode get their
// inode lock asked for ahead (lockAhead) when the next inodeLockLow of
// them are not all held or asked for already.
const (
	inodeLockAhead = 8
	inodeLockLow   = 2
)

// lockAhead asks in the background for the inode locks of the next free
// blocks above blk, an inode a transaction just committed, in its
// allocation group (as this node's cache of the group's header has it),
// the blocks allocInode hands out next, and reserves them for inodes
// (other allocations pass them by while they can): the next new inodes
// then find their lock cached instead of waiting on the way of the
// create for the lock manager (an etcd write and a grant: about a third
// of a small file's create on a loaded machine). It runs after the
// commit, so that a transaction making many inodes does not meet its
// own requests in flight (it tries locks out of order, and would start
// over). Each lock is only tried: one that a local transaction or
// another node holds is left alone. Nothing is asked ahead in recovery or once the store closes; a
// reserved block is only a preference kept in memory, never on the
// device.
func (s *Store) lockAhead(blk uint64) {
	if s.readOnly || s.aheadCtx == nil || s.closed.Load() || blk < s.sb.AGStart || blk >= s.sb.Blocks {
		return
	}
	ag := int((blk - s.sb.AGStart) / uint64(s.sb.AGBlocks))
	start, length := s.sb.agRange(ag)
	img := s.glockFor(classAG, uint64(ag)).cached(start)
	if img == nil {
		return
	}
	h, err := decodeAGHeader(img, start)
	if err != nil || !h.fits(s.sb, ag) {
		return
	}
	s.aheadMu.Lock()
	delete(s.reserved, blk)
	s.aheadMu.Unlock()
	// The next free blocks: when one of the first inodeLockLow has its
	// lock neither held nor asked for, every one of them without is
	// asked for at once. The requests of one refill reach etcd together,
	// and its log makes them durable with one sync for all, so a steady
	// run of creates costs about one etcd log sync per
	// inodeLockAhead-inodeLockLow new inodes instead of one each (each
	// sync on the disk the legs may share).
	type candidate struct {
		b    uint64
		g    *glock
		busy bool
	}
	var next []candidate
	refill := false
	for i := uint32(blk-start) + 1; i < length && len(next) < inodeLockAhead; i++ {
		if bitGet(h.Bitmap, i) {
			continue
		}
		b := start + uint64(i)
		g := s.glockFor(classInode, b)
		g.mu.Lock()
		busy := g.hold != nil || g.asking != nil
		g.mu.Unlock()
		s.aheadMu.Lock()
		busy = busy || s.ahead[b]
		s.aheadMu.Unlock()
		if !busy && len(next) < inodeLockLow {
			refill = true
		}
		next = append(next, candidate{b, g, busy})
	}
	s.aheadMu.Lock()
	defer s.aheadMu.Unlock()
	for k, c := range next {
		if s.aheadCtx.Err() != nil {
			return
		}
		if k < inodeLockLow || refill {
			s.reserved[c.b] = true
		}
		if !refill || c.busy || s.ahead[c.b] {
			continue
		}
		s.ahead[c.b] = true
		s.aheadWG.Add(1)
		go func() {
			defer func() {
				s.aheadMu.Lock()
				delete(s.ahead, c.b)
				s.aheadMu.Unlock()
				s.aheadWG.Done()
			}()
			// Only tried: a lock a local transaction holds, or another
			// node holds, is not worth a wait (nor a blocking callback
			// taking it from that node), and a wait on the local side
			// would not end at Close.
			if err := c.g.acquire(s.aheadCtx, Exclusive, true, false); err == nil {
				c.g.put(Exclusive, false) // the grant stays cached
			}
		}()
	}
}

// reservedNow is a copy of the blocks reserved for inodes (lockAhead).
func (s *Store) reservedNow() map[uint64]bool {
	s.aheadMu.Lock()
	defer s.aheadMu.Unlock()
	if len(s.reserved) == 0 {
		return nil
	}
	m := make(map[uint64]bool, len(s.reserved))
	for b := range s.reserved {
		m[b] = true
	}
	return m
}

// agOrder is the order in which a node whose home allocation group is
// home tries the count groups: its home first, then the others spread
// out by halving steps (home+count/2, home+count/4, home+3count/4, ...),
// so that nodes with neighbouring homes (slot s has home s mod count)
// fill different groups before they meet in one. Every node writes its
// files, inodes and directories where it allocates: two nodes in
// different groups write different regions of the volume, and neither
// group's lock nor the regions' mirror locks go back and forth.
func agOrder(home, count int) []int {
	bits := 0
	for 1<<bits < count {
		bits++
	}
	order := make([]int, 0, count)
	for i := 0; i < 1<<bits; i++ {
		off := 0
		for b := 0; b < bits; b++ {
			if i&(1<<b) != 0 {
				off |= 1 << (bits - 1 - b)
			}
		}
		if off < count {
			order = append(order, (home+off)%count)
		}
	}
	return order
}

// run of blocks handed out by the allocator.
type blockRun struct {
	start uint64
	count uint32
}

// agHeaderOf reads (through the transaction) the header of ag, which the
// transaction holds.
func (tx *Tx) agHeaderOf(g *glock, ag int) (*agHeader, uint64, error) {
	start, _ := tx.s.sb.agRange(ag)
	b, err := tx.read(g, start)
	if err != nil {
		return nil, 0, err
	}
	h, err := decodeAGHeader(b, start)
	if err != nil {
		return nil, 0, fmt.Errorf("allocation group %d: %w", ag, err)
	}
	if !h.fits(tx.s.sb, ag) {
		return nil, 0, fmt.Errorf("%w: allocation group %d: header at block %d has a bitmap of %d bytes", ErrCorrupt, ag, start, len(h.Bitmap))
	}
	return h, start, nil
}

// alloc allocates n blocks, as few runs as it can, preferring the
// allocation groups the transaction already holds and then this node's
// own groups in its order (agOrder), so nodes allocate in parallel
// without contending for a group's lock or for the mirror's locks of the
// regions they write. Groups whose lock would have to be waited for out
// of lock order are skipped. A group whose header is damaged (ErrCorrupt)
// is passed by. ErrNoSpace when no group has the room, or the ErrCorrupt
// of a damaged group when the room may be there; nothing is changed then
// that the transaction commits (it is abandoned).
func (tx *Tx) alloc(n int) ([]blockRun, error) { return tx.allocIn(n, false) }

// allocInode allocates the block of a new inode like alloc, but may take
// the blocks reserved for inodes (lockAhead), which alloc passes by.
func (tx *Tx) allocInode() (uint64, error) {
	runs, err := tx.allocIn(1, true)
	if err != nil {
		return 0, err
	}
	return runs[0].start, nil
}

// allocIn is alloc; forInode takes reserved blocks too. Without forInode
// reserved blocks are passed by in a first pass and taken in a second
// when nothing else is left.
func (tx *Tx) allocIn(n int, forInode bool) ([]blockRun, error) {
	s := tx.s
	var skip map[uint64]bool
	if !forInode {
		skip = s.reservedNow()
	}
	var runs []blockRun
	order := make([]int, 0, s.sb.AGCount)
	seen := map[int]bool{}
	for g := range tx.held {
		if g.class == classAG && tx.held[g] == Exclusive {
			order = append(order, int(g.id))
			seen[int(g.id)] = true
		}
	}
	sort.Ints(order)
	for _, ag := range s.agOrder {
		if !seen[ag] {
			order = append(order, ag)
		}
	}
	var damaged error // the first group whose header could not be used
	for pass := 0; pass < 2 && n > 0; pass++ {
		if pass == 1 {
			if skip == nil {
				break
			}
			skip = nil // only reserved blocks are left: take them
		}
		var err error
		if runs, n, err = tx.allocPass(order, runs, n, skip, &damaged); err != nil {
			return nil, err
		}
	}
	if n > 0 && damaged != nil {
		// The room wanted may be in the damaged group: say so rather
		// than ErrNoSpace.
		return nil, damaged
	}
	if n > 0 {
		return nil, fmt.Errorf("%w: %d more blocks wanted", ErrNoSpace, n)
	}
	return runs, nil
}

// agNote is what a node learned of an allocation group the last time an
// allocation looked at it: full (no free block), or busy (another node
// holds its lock), until the time given. A note only orders the search;
// the last sweep of an allocation looks at every group.
type agNote struct {
	full, busy bool
	until      time.Time
}

// How long a group found full, or held by another node, is passed over
// by the first sweep of an allocation: a node that frees blocks in a
// group forgets its note at once; another node's frees, or its letting go
// of the lock, are seen at the latest this much later.
const (
	agFullFor = time.Second
	agBusyFor = time.Second
)

// noteAG records what an allocation found of ag (both false: nothing to
// remember).
func (s *Store) noteAG(ag int, full, busy bool) {
	s.agMu.Lock()
	defer s.agMu.Unlock()
	if s.agNotes == nil {
		s.agNotes = map[int]agNote{}
	}
	switch {
	case full:
		s.agNotes[ag] = agNote{full: true, until: s.clk.Now().Add(agFullFor)}
	case busy:
		s.agNotes[ag] = agNote{busy: true, until: s.clk.Now().Add(agBusyFor)}
	default:
		delete(s.agNotes, ag)
	}
}

// passOver says whether the first sweep of an allocation passes ag by.
func (s *Store) passOver(ag int) bool {
	s.agMu.Lock()
	defer s.agMu.Unlock()
	n, ok := s.agNotes[ag]
	if ok && s.clk.Now().After(n.until) {
		delete(s.agNotes, ag)
		return false
	}
	return ok
}

// allocPass allocates up to n blocks in the groups of order (first fit),
// passing by the blocks in skip; it returns the runs and how many blocks
// are still wanted; the first group whose header it found damaged goes to
// *damaged. It looks in two sweeps, as GFS2's block reservation
// does over its resource groups (gfs2_inplace_reserve: first only groups
// whose lock comes without a wait, LM_FLAG_TRY, and that are not known
// full; then any): the first takes only groups this node gets without
// waiting for another node, passing by those it found full or held
// elsewhere a moment ago, so that a node whose own groups are full
// spreads into free groups rather than into the group another node
// allocates in (whose lock would go back and forth between them); the
// second looks at the groups the first did not, waiting for their locks
// in lock order as any lock, so that ErrNoSpace still means no room in
// any group.
func (tx *Tx) allocPass(order []int, runs []blockRun, n int, skip map[uint64]bool, damaged *error) ([]blockRun, int, error) {
	s := tx.s
	looked := make(map[int]bool, len(order))
	first := 0
	if tx.recovery {
		first = 1 // a recovery takes its locks as it always does
	}
	for sweep := first; sweep < 2 && n > 0; sweep++ {
		for _, ag := range order {
			if n == 0 {
				break
			}
			g := s.glockFor(classAG, uint64(ag))
			_, held := tx.held[g]
			if looked[ag] || (sweep == 0 && !held && s.passOver(ag)) {
				continue
			}
			var ok bool
			var err error
			if sweep == 0 && !held && !g.covers(Exclusive) {
				// Not this node's now: asked for only if no other
				// node has it. A refusal while no local user asks
				// for it is the lock manager's: another node has it.
				if ok, err = tx.tryLockNoWait(g, Exclusive); err == nil && !ok && !g.localAsk() {
					s.noteAG(ag, false, true)
				}
			} else {
				ok, err = tx.tryLock(g, Exclusive)
			}
			if err != nil {
				return nil, 0, err
			}
			if !ok {
				continue
			}
			looked[ag] = true
			h, start, err := tx.agHeaderOf(g, ag)
			if errors.Is(err, ErrCorrupt) {
				// Damaged on every leg (or well formed but wrong): no
				// block of it is handed out until a repair rebuilds
				// it; the other groups serve meanwhile.
				if *damaged == nil {
					*damaged = err
				}
				if !s.passOver(ag) {
					s.log.Error("allocation group header damaged; allocating in other groups until a repair (shoalblk store check --repair, offline)", "group", ag, "error", err)
					s.noteAG(ag, true, false)
				}
				continue
			}
			if err != nil {
				return nil, 0, err
			}
			if h.Free == 0 {
				s.noteAG(ag, true, false)
				continue
			}
			s.noteAG(ag, false, false)
			_, length := s.sb.agRange(ag)
			for i := uint32(1); i < length && n > 0; i++ {
				if i%64 == 0 && i+64 <= length && binary.LittleEndian.Uint64(h.Bitmap[i/8:]) == ^uint64(0) {
					// 64 blocks in use: a full group is passed over a
					// word at a time.
					i += 63
					continue
				}
				blk := start + uint64(i)
				if bitGet(h.Bitmap, i) || skip[blk] {
					continue
				}
				bitSet(h.Bitmap, i)
				h.Free--
				n--
				if k := len(runs); k > 0 && runs[k-1].start+uint64(runs[k-1].count) == blk {
					runs[k-1].count++
				} else {
					runs = append(runs, blockRun{blk, 1})
				}
			}
			if err := tx.write(g, start, h.encode(start)); err != nil {
				return nil, 0, err
			}
		}
	}
	return runs, n, nil
}

// allocOne allocates one block.
func (tx *Tx) allocOne() (uint64, error) {
	runs, err := tx.alloc(1)
	if err != nil {
		return 0, err
	}
	return runs[0].start, nil
}

// newGen hands out an inode generation from blk's allocation group (held
// EX by the transaction, as blk was just allocated from it).
func (tx *Tx) newGen(blk uint64) (uint32, error) {
	ag, _ := tx.s.sb.agOf(blk)
	g := tx.s.glockFor(classAG, uint64(ag))
	h, start, err := tx.agHeaderOf(g, ag)
	if err != nil {
		return 0, err
	}
	h.NextGen++
	if h.NextGen == 0 {
		h.NextGen = 1
	}
	return h.NextGen, tx.write(g, start, h.encode(start))
}

// free marks blocks to be freed when the transaction commits (never
// earlier: a block freed and handed out again in one transaction could
// have its old contents overwritten before the commit).
func (tx *Tx) free(start uint64, count uint32) {
	for i := uint64(0); i < uint64(count); i++ {
		tx.frees[start+i] = true
	}
}

// applyFrees clears the freed blocks in their groups' bitmaps.
func (tx *Tx) applyFrees() error {
	if len(tx.frees) == 0 {
		return nil
	}
	s := tx.s
	byAG := map[int][]uint64{}
	for blk := range tx.frees {
		if blk < s.sb.AGStart || blk >= s.sb.Blocks {
			return fmt.Errorf("%w: freeing block %d outside the allocation groups", ErrCorrupt, blk)
		}
		ag, _ := s.sb.agOf(blk)
		byAG[ag] = append(byAG[ag], blk)
	}
	ags := make([]int, 0, len(byAG))
	for ag := range byAG {
		ags = append(ags, ag)
	}
	sort.Ints(ags)
	for _, ag := range ags {
		g := s.glockFor(classAG, uint64(ag))
		if err := tx.lock(g, Exclusive); err != nil {
			return err
		}
		h, start, err := tx.agHeaderOf(g, ag)
		if err != nil {
			return err
		}
		for _, blk := range byAG[ag] {
			i := uint32(blk - start)
			if i == 0 || !bitGet(h.Bitmap, i) {
				return fmt.Errorf("%w: freeing block %d, which allocation group %d has free", ErrCorrupt, blk, ag)
			}
			bitClear(h.Bitmap, i)
			h.Free++
		}
		if err := tx.write(g, start, h.encode(start)); err != nil {
			return err
		}
		s.noteAG(ag, false, false)
	}
	tx.frees = map[uint64]bool{}
	return nil
}

// apartBlocks is the size of the runs a directory made apart takes alone
// (MkdirApart): the mirror's region under the default FormatOptions.Align
// (256 blocks, 1 MiB), the unit of its region and checksum-area locks.
const apartBlocks = 256

// allocApart allocates the first block of a run of apartBlocks blocks,
// aligned to apartBlocks, that is wholly free, in this node's groups in
// its order, the highest such run of a group first (first-fit allocation
// fills a group from the bottom, so the run's other blocks are the last
// of the group to be handed out). ErrNoSpace when no group has such a run.
func (tx *Tx) allocApart() (uint64, error) {
	s := tx.s
	for _, ag := range s.agOrder {
		g := s.glockFor(classAG, uint64(ag))
		ok, err := tx.tryLock(g, Exclusive)
		if err != nil {
			return 0, err
		}
		if !ok {
			continue
		}
		h, start, err := tx.agHeaderOf(g, ag)
		if err != nil {
			return 0, err
		}
		_, length := s.sb.agRange(ag)
		if h.Free < apartBlocks {
			continue
		}
		end := start + uint64(length)
		for rs := end / apartBlocks * apartBlocks; rs >= start+apartBlocks; rs -= apartBlocks {
			run := rs - apartBlocks
			if run <= start {
				break // the group's first run holds its header
			}
			free := true
			for b := run; b < rs && free; b++ {
				free = !bitGet(h.Bitmap, uint32(b-start))
			}
			if !free {
				continue
			}
			bitSet(h.Bitmap, uint32(run-start))
			h.Free--
			if err := tx.write(g, start, h.encode(start)); err != nil {
				return 0, err
			}
			return run, nil
		}
	}
	return 0, fmt.Errorf("%w: no free run of %d blocks for a directory made apart", ErrNoSpace, apartBlocks)
}
