package store

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/shoal-ha/shoal/blockdev"
)

// Problem is one thing Check found wrong, named by block, inode and path.
type Problem struct {
	// Block is the block concerned (0 when none is).
	Block uint64 `json:"block"`
	// Ino is the inode concerned (0 when none is).
	Ino uint64 `json:"ino"`
	// Path is the inode's path in the tree ("" when unknown).
	Path string `json:"path"`
	// What says what is wrong.
	What string `json:"what"`
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Path != "" {
		fmt.Fprintf(&b, "%s: ", p.Path)
	}
	if p.Ino != 0 {
		fmt.Fprintf(&b, "inode %d: ", p.Ino)
	}
	if p.Block != 0 {
		fmt.Fprintf(&b, "block %d: ", p.Block)
	}
	b.WriteString(p.What)
	return b.String()
}

// CheckReport is the outcome of a check.
type CheckReport struct {
	Problems   []Problem `json:"problems"`
	Dirs       int       `json:"dirs"`
	Files      int       `json:"files"`
	UsedBlocks uint64    `json:"used_blocks"`
	FreeBlocks uint64    `json:"free_blocks"`
	Offline    bool      `json:"offline"`
	SlotsDirty []int     `json:"slots_dirty,omitempty"` // journals holding transactions not yet checkpointed
	Truncated  bool      `json:"truncated,omitempty"`   // stopped after MaxProblems
	// Rechecked counts what the online check took for a problem and, looked
	// at again under the locks of both sides, found to be a change made
	// meanwhile (a file moved, a block freed and handed out again).
	Rechecked   int `json:"rechecked,omitempty"`
	MaxProblems int `json:"-"`
}

// Err is nil for a clean report, else an ErrCorrupt error naming the
// first problems.
func (r *CheckReport) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	var lines []string
	for i, p := range r.Problems {
		if i == 5 {
			lines = append(lines, fmt.Sprintf("and %d more", len(r.Problems)-5))
			break
		}
		lines = append(lines, p.String())
	}
	return fmt.Errorf("%w: %d problems: %s", ErrCorrupt, len(r.Problems), strings.Join(lines, "; "))
}

type checker struct {
	sb      *Superblock
	read    func(owner, blk uint64) ([]byte, error)
	rep     *CheckReport
	owner   map[uint64]uint64   // block -> inode that uses it
	claimed []uint64            // blocks in the order claimed
	named   map[uint64]entryRef // inode -> the entry it was reached through
	walked  map[uint64]bool     // directories walked

	// Online only (nil offline): the tree changes between the
	// transactions the check runs in, so what looks like a block used
	// twice or a directory gone may be a file moved or a block freed and
	// handed out again meanwhile. These look again, under the locks of
	// both sides at once (the ones a rename or a reuse takes), before a
	// problem is reported. An error is the transaction's to handle (it
	// starts over with the lock taken in order).
	stillNamed func(ref entryRef, ino uint64) (bool, error) // ref's directory still names ino
	stillUses  func(ino, blk uint64) (bool, error)          // live inode ino still uses blk
	// Online only: a directory's step reads every child's inode under
	// its lock, in one transaction. Children whose locks come before the
	// directory's in lock order could only be tried for there, and each
	// one another node holds made the transaction start over: with many,
	// the step gave up (ErrConflict). So the children are listed first
	// (listKids, a transaction of its own) and the step takes the
	// directory's and their locks in lock order before it reads anything
	// (lockKids), waiting for each as the lock order allows.
	listKids func(dir uint64) ([]uint64, error)
	lockKids func(dir uint64, kids []uint64) error
}

// entryRef is a directory entry the check followed.
type entryRef struct {
	parent uint64
	name   string
	gen    uint32
	path   string
}

func (c *checker) problem(blk, ino uint64, p, f string, a ...any) {
	if c.rep.MaxProblems > 0 && len(c.rep.Problems) >= c.rep.MaxProblems {
		c.rep.Truncated = true
		return
	}
	c.rep.Problems = append(c.rep.Problems, Problem{Block: blk, Ino: ino, Path: p, What: fmt.Sprintf(f, a...)})
}

// claim records that ino uses blk; a block used twice is a problem.
func (c *checker) claim(blk, ino uint64, p, what string) bool {
	if blk < c.sb.AGStart || blk >= c.sb.Blocks {
		c.problem(blk, ino, p, "%s points outside the allocation groups", what)
		return false
	}
	ag, start := c.sb.agOf(blk)
	if blk == start {
		c.problem(blk, ino, p, "%s is the header of allocation group %d", what, ag)
		return false
	}
	if other, ok := c.owner[blk]; ok {
		if c.stillUses != nil && other != ino {
			used, err := c.stillUses(other, blk)
			if err != nil {
				return false // the transaction starts over
			}
			if !used {
				// other let go of it since it was seen: ino's now
				// (forgotten again if this transaction starts over).
				c.rep.Rechecked++
				c.owner[blk] = ino
				c.claimed = append(c.claimed, blk)
				return true
			}
		}
		c.problem(blk, ino, p, "%s is also used by inode %d", what, other)
		return false
	}
	c.owner[blk] = ino
	c.claimed = append(c.claimed, blk)
	return true
}

// reachedAgain decides about inode ino, already reached through another
// entry, reached again through de of parent at path p: the same entry
// (nothing to do), a move seen from both ends (online: the first entry is
// gone now), or a real second name (a problem).
func (c *checker) reachedAgain(ino uint64, p string, de dirEntry, parent uint64) {
	first := c.named[ino]
	if first.parent == parent && first.name == de.Name {
		return
	}
	if c.stillNamed != nil {
		still, err := c.stillNamed(first, ino)
		if err != nil {
			return // the transaction starts over
		}
		if !still {
			c.rep.Rechecked++
			c.named[ino] = entryRef{parent: parent, name: de.Name, gen: de.Gen, path: p}
			return
		}
	}
	c.problem(ino, ino, p, "inode is also named at %s", first.path)
}

// checkInode checks inode ino reached as path p through entry de (de.Ino
// == 0 for the root) and returns it (nil when unreadable).
func (c *checker) checkInode(ino uint64, p string, de dirEntry, parent uint64) *inode {
	if o, ok := c.owner[ino]; ok && o == ino && de.Ino != 0 {
		if _, ok := c.named[ino]; ok {
			c.reachedAgain(ino, p, de, parent)
			return nil
		}
	}
	if !c.claim(ino, ino, p, "inode") {
		return nil
	}
	if de.Ino != 0 {
		c.named[ino] = entryRef{parent: parent, name: de.Name, gen: de.Gen, path: p}
	}
	b, err := c.read(ino, ino)
	if err != nil {
		c.problem(ino, ino, p, "inode unreadable: %v", err)
		return nil
	}
	in, err := decodeInode(b, ino)
	if err != nil {
		c.problem(ino, ino, p, "%v", err)
		return nil
	}
	if de.Ino != 0 && (in.Gen != de.Gen || in.Type != de.Type) {
		c.problem(ino, ino, p, "entry says generation %d type %d, inode has generation %d type %d", de.Gen, de.Type, in.Gen, in.Type)
	}
	if in.Nlink == 0 {
		c.problem(ino, ino, p, "reachable inode has no links")
	} else if in.Nlink != 1 {
		c.problem(ino, ino, p, "inode has %d links, one entry names it", in.Nlink)
	}
	if in.Type == typeDir && in.Parent != parent {
		c.problem(ino, ino, p, "directory's parent is inode %d, found in inode %d", in.Parent, parent)
	}
	if in.Type == typeFile {
		c.rep.Files++
		c.checkFile(in, p)
	}
	return in
}

func (c *checker) checkFile(in *inode, p string) {
	if in.Layout == layoutOverflow {
		var exts []Extent
		n := 0
		for blk := in.ExtBlk; blk != 0; n++ {
			if n > int(c.sb.Blocks) || !c.claim(blk, in.Ino, p, "extent block") {
				return
			}
			b, err := c.read(in.Ino, blk)
			if err != nil {
				c.problem(blk, in.Ino, p, "extent block unreadable: %v", err)
				return
			}
			x, h, err := decodeExtentBlock(b, blk)
			if err != nil {
				c.problem(blk, in.Ino, p, "%v", err)
				return
			}
			if h.Owner != in.Ino || h.Gen != in.Gen {
				c.problem(blk, in.Ino, p, "extent block belongs to inode %d generation %d", h.Owner, h.Gen)
				return
			}
			exts = append(exts, x.Extents...)
			blk = x.Next
		}
		in.Extents = exts
	}
	var prevEnd uint64
	for i, x := range in.Extents {
		if x.Count == 0 || (i > 0 && x.File < prevEnd) {
			c.problem(in.Ino, in.Ino, p, "extent %d (file block %d, %d blocks) empty or out of order", i, x.File, x.Count)
			continue
		}
		prevEnd = x.File + uint64(x.Count)
		if int64(x.File+uint64(x.Count)-1)*BlockSize >= in.Size {
			c.problem(in.Ino, in.Ino, p, "extent %d maps file block %d, past the size %d", i, x.File+uint64(x.Count)-1, in.Size)
		}
		for k := uint64(0); k < uint64(x.Count); k++ {
			if !c.claim(x.Disk+k, in.Ino, p, "data block") {
				break
			}
		}
	}
}

// checkDir checks the leaves of directory dir at path p and returns its
// entries.
func (c *checker) checkDir(dir *inode, p string) []dirEntry {
	c.rep.Dirs++
	var all []dirEntry
	names := map[string]bool{}
	for bucket, first := range dir.Buckets {
		n := 0
		for blk := first; blk != 0; n++ {
			if n > int(c.sb.Blocks) || !c.claim(blk, dir.Ino, p, "directory leaf") {
				break
			}
			b, err := c.read(dir.Ino, blk)
			if err != nil {
				c.problem(blk, dir.Ino, p, "directory leaf unreadable: %v", err)
				break
			}
			l, h, err := decodeDirLeaf(b, blk)
			if err != nil {
				c.problem(blk, dir.Ino, p, "%v", err)
				break
			}
			if h.Owner != dir.Ino || h.Gen != dir.Gen {
				c.problem(blk, dir.Ino, p, "directory leaf belongs to inode %d generation %d", h.Owner, h.Gen)
				break
			}
			if len(l.Entries) == 0 {
				c.problem(blk, dir.Ino, p, "empty directory leaf left in bucket %d", bucket)
			}
			for _, e := range l.Entries {
				if bucketOf(e.Name) != bucket {
					c.problem(blk, dir.Ino, p, "entry %q in bucket %d, hashes to %d", e.Name, bucket, bucketOf(e.Name))
				}
				if names[e.Name] {
					c.problem(blk, dir.Ino, p, "entry %q twice", e.Name)
				}
				names[e.Name] = true
				all = append(all, e)
			}
			blk = l.Next
		}
	}
	if uint64(len(all)) != dir.Entries {
		c.problem(dir.Ino, dir.Ino, p, "directory counts %d entries, has %d", dir.Entries, len(all))
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return all
}

func (c *checker) checkJournals(readHdr func(slot int) (*journalHeader, error), scan func(slot int, h *journalHeader) (int, error)) {
	for slot := 0; slot < int(c.sb.Slots); slot++ {
		h, err := readHdr(slot)
		if err != nil {
			c.problem(c.sb.journalStart(slot), 0, "", "journal of slot %d: %v", slot, err)
			continue
		}
		n, err := scan(slot, h)
		if err != nil {
			c.problem(c.sb.journalStart(slot), 0, "", "journal of slot %d: %v", slot, err)
			continue
		}
		if n > 0 {
			c.rep.SlotsDirty = append(c.rep.SlotsDirty, slot)
		}
	}
}

// checkBitmaps compares what the tree uses with the allocation groups'
// bitmaps (offline only: online, other nodes allocate meanwhile).
func (c *checker) checkBitmaps(readBlk func(blk uint64) ([]byte, error)) {
	for ag := 0; ag < int(c.sb.AGCount); ag++ {
		start, n := c.sb.agRange(ag)
		b, err := readBlk(start)
		if err != nil {
			c.problem(start, 0, "", "allocation group %d header unreadable: %v", ag, err)
			continue
		}
		h, err := decodeAGHeader(b, start)
		if err != nil {
			c.problem(start, 0, "", "allocation group %d: %v", ag, err)
			continue
		}
		if !h.fits(c.sb, ag) {
			c.problem(start, 0, "", "allocation group %d bitmap of %d bytes for %d blocks", ag, len(h.Bitmap), n)
			continue
		}
		free := uint32(0)
		for i := uint32(0); i < n; i++ {
			used := bitGet(h.Bitmap, i)
			if !used {
				free++
			}
			blk := start + uint64(i)
			_, inTree := c.owner[blk]
			switch {
			case i == 0 && !used:
				c.problem(blk, 0, "", "allocation group %d header marked free", ag)
			case i == 0:
			case inTree && !used:
				c.problem(blk, c.owner[blk], "", "block in use by inode %d is marked free", c.owner[blk])
			case !inTree && used:
				if b, err := readBlk(blk); err == nil {
					if in, err := decodeInode(b, blk); err == nil && in.Nlink > 0 {
						c.problem(blk, blk, "", "orphan inode (type %d, %d bytes): no directory names it", in.Type, in.Size)
						continue
					}
				}
				c.problem(blk, 0, "", "block marked used in allocation group %d but not reachable (leaked)", ag)
			}
		}
		if free != h.Free {
			c.problem(start, 0, "", "allocation group %d counts %d free blocks, bitmap has %d", ag, h.Free, free)
		}
		c.rep.FreeBlocks += uint64(free)
	}
}

// walk checks directory ino at path p and everything under it, depth
// first. each runs one step (online: in a transaction of its own, so the
// directory is read anew under its PR lock).
func (c *checker) walk(ino uint64, p string, each func(fn func() error) error) error {
	if c.walked[ino] {
		return nil // reached again through a move (online)
	}
	c.walked[ino] = true
	var kids []uint64
	if c.listKids != nil {
		var err error
		// A directory that cannot be listed is reported by the step.
		if kids, err = c.listKids(ino); err != nil && !errors.Is(err, ErrCorrupt) {
			return fmt.Errorf("store: check of directory %s (inode %d): %w", p, ino, err)
		}
	}
	var subdirs []dirEntry
	err := each(func() error {
		subdirs = nil
		if c.lockKids != nil {
			if err := c.lockKids(ino, kids); err != nil {
				return err
			}
		}
		b, err := c.read(ino, ino)
		if err != nil {
			if !c.gone(ino) {
				c.problem(ino, ino, p, "directory unreadable: %v", err)
			}
			return nil
		}
		dir, err := decodeInode(b, ino)
		if err == nil && c.stillNamed != nil && (dir.Type != typeDir || dir.Nlink == 0 || (c.named[ino].gen != 0 && dir.Gen != c.named[ino].gen)) {
			// Online: changed since its entry was read in another
			// transaction (offline checkInode said what is wrong).
			err = fmt.Errorf("%w: directory inode %d is now type %d generation %d with %d links", ErrCorrupt, ino, dir.Type, dir.Gen, dir.Nlink)
		}
		if err != nil {
			if !c.gone(ino) {
				c.problem(ino, ino, p, "%v", err)
			}
			return nil
		}
		for _, e := range c.checkDir(dir, p) {
			kid := c.checkInode(e.Ino, path.Join(p, e.Name), e, dir.Ino)
			if kid != nil && kid.Type == typeDir {
				subdirs = append(subdirs, e)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: check of directory %s (inode %d): %w", p, ino, err)
	}
	for _, e := range subdirs {
		if err := c.walk(e.Ino, path.Join(p, e.Name), each); err != nil {
			return err
		}
	}
	return nil
}

// gone says (online) whether directory ino was removed or moved since its
// entry was read: its entry is not there any more.
func (c *checker) gone(ino uint64) bool {
	ref, ok := c.named[ino]
	if c.stillNamed == nil || !ok {
		return false
	}
	still, err := c.stillNamed(ref, ino)
	if err == nil && !still {
		c.rep.Rechecked++
	}
	return err != nil || !still
}

// CheckDevice checks the store on dev offline (no node may have it open):
// superblock, journals, the whole tree and every allocation group's
// bitmap against the blocks the tree uses. Every problem names block,
// inode and path. A journal holding transactions (a crashed node not yet
// recovered) is listed in SlotsDirty; the tree is checked as it is in
// place.
func CheckDevice(ctx context.Context, dev blockdev.Device) (*CheckReport, error) {
	sb, err := ReadSuperblock(ctx, dev)
	if err != nil {
		return nil, err
	}
	s := &Store{dev: dev, sb: sb}
	rep := &CheckReport{Offline: true, MaxProblems: 1000}
	raw := func(blk uint64) ([]byte, error) { return s.readBlock(ctx, blk) }
	c := newChecker(sb, rep)
	c.read = func(_, blk uint64) ([]byte, error) { return raw(blk) }
	c.checkJournals(func(slot int) (*journalHeader, error) { return s.readJournalHeader(ctx, slot) },
		func(slot int, h *journalHeader) (int, error) {
			txs, _, _, err := s.scanJournal(ctx, slot, h)
			n := 0
			for _, tx := range txs {
				if tx.Seq > h.AppliedSeq {
					n++
				}
			}
			return n, err
		})
	root := c.checkInode(sb.Root, "/", dirEntry{}, sb.Root)
	if root != nil {
		if root.Type != typeDir {
			c.problem(sb.Root, sb.Root, "/", "root is not a directory")
		} else {
			_ = c.walk(root.Ino, "/", func(fn func() error) error { return fn() })
		}
	}
	c.rep.UsedBlocks = uint64(len(c.owner))
	c.checkBitmaps(raw)
	return rep, nil
}

// Check checks the tree online, read-only, while other nodes keep working:
// each directory and its entries' inodes are read under PR locks (one
// transaction per directory). Allocation bitmaps are not compared (other
// nodes allocate meanwhile); CheckDevice does that offline. Directories are
// seen one at a time, so a file moved between two of them, or a block one
// file let go and another got, can look used twice: before reporting that,
// the check looks again in one transaction under the PR locks of both
// sides (both directories, or both inodes: the locks a rename or a reuse
// would need EX), and reports only what is still so. A directory removed
// after its entry was read is skipped the same way. Files moved during the
// check may be checked twice or not at all (it is not a snapshot).
//
// A directory's and its entries' locks are taken in lock order, so other
// nodes holding many of them (files just written) make the check wait
// for each, within ctx, instead of starting over again and again. An
// error names the directory it stopped at; ErrConflict and ctx's errors
// are safe to retry (the check changes nothing).
func (s *Store) Check(ctx context.Context) (*CheckReport, error) {
	if err := s.alive(); err != nil {
		return nil, err
	}
	rep := &CheckReport{MaxProblems: 1000}
	c := newChecker(s.sb, rep)
	var cur *Tx
	c.read = func(owner, blk uint64) ([]byte, error) {
		g := s.glockFor(classInode, owner)
		if err := cur.lock(g, Shared); err != nil {
			return nil, err
		}
		return cur.read(g, blk)
	}
	c.stillNamed = func(ref entryRef, ino uint64) (bool, error) { return cur.stillNamed(ref, ino) }
	c.stillUses = func(ino, blk uint64) (bool, error) { return cur.stillUses(ino, blk) }
	c.listKids = func(dir uint64) (kids []uint64, err error) {
		err = s.View(ctx, func(tx *Tx) error {
			in, g, err := tx.getInode(dir, Shared)
			if err != nil {
				return err
			}
			if in.Type != typeDir {
				return nil
			}
			all, err := tx.listDir(g, in)
			kids = kids[:0]
			for _, e := range all {
				kids = append(kids, e.Ino)
			}
			return err
		})
		return kids, err
	}
	c.lockKids = func(dir uint64, kids []uint64) error {
		gs := make([]*glock, 0, len(kids)+1)
		gs = append(gs, s.glockFor(classInode, dir))
		for _, k := range kids {
			if k >= s.sb.AGStart && k < s.sb.Blocks { // a bad entry is the step's to report
				gs = append(gs, s.glockFor(classInode, k))
			}
		}
		sort.Slice(gs, func(i, j int) bool { return gs[i].before(gs[j]) })
		for _, g := range gs {
			if err := cur.lock(g, Shared); err != nil {
				return err
			}
		}
		return nil
	}
	each := func(fn func() error) error {
		return s.View(ctx, func(tx *Tx) error {
			cur = tx
			m := c.mark()
			err := fn()
			if tx.retry != nil {
				c.rollback(m)
			}
			return err
		})
	}
	var root *inode
	if err := each(func() error {
		root = c.checkInode(s.sb.Root, "/", dirEntry{}, s.sb.Root)
		return nil
	}); err != nil {
		return nil, err
	}
	if root != nil && root.Type == typeDir {
		if err := c.walk(root.Ino, "/", each); err != nil {
			return nil, err
		}
	}
	rep.UsedBlocks = uint64(len(c.owner))
	return rep, nil
}

func newChecker(sb *Superblock, rep *CheckReport) *checker {
	return &checker{sb: sb, rep: rep, owner: map[uint64]uint64{}, named: map[uint64]entryRef{}, walked: map[uint64]bool{}}
}

// stillNamed says whether ref's directory names inode ino (of ref's
// generation) now, under the directory's PR lock.
func (tx *Tx) stillNamed(ref entryRef, ino uint64) (bool, error) {
	dir, g, err := tx.getInode(ref.parent, Shared)
	if err != nil {
		return false, tx.retryOr(err)
	}
	if dir.Type != typeDir || dir.Nlink == 0 {
		return false, nil
	}
	de, ok, err := tx.lookup(g, dir, ref.name)
	if err != nil {
		return false, tx.retryOr(err)
	}
	return ok && de.Ino == ino && de.Gen == ref.gen, nil
}

// stillUses says whether inode ino is live and uses block blk now (as
// its inode block, a directory leaf, an extent block or file data), under
// its PR lock.
func (tx *Tx) stillUses(ino, blk uint64) (bool, error) {
	in, g, err := tx.getInode(ino, Shared)
	if err != nil {
		return true, tx.retryOr(err)
	}
	switch {
	case in.Nlink == 0:
		return false, nil
	case blk == ino:
		return true, nil
	case in.Type == typeDir:
		for _, first := range in.Buckets {
			for b, n := first, 0; b != 0 && n <= int(tx.s.sb.Blocks); n++ {
				if b == blk {
					return true, nil
				}
				l, err := tx.leafOf(g, in, b)
				if err != nil {
					return true, tx.retryOr(err)
				}
				b = l.Next
			}
		}
		return false, nil
	}
	if in.ExtBlk != 0 {
		chain, _, err := tx.extentChain(g, in)
		if err != nil {
			return true, tx.retryOr(err)
		}
		for _, b := range chain {
			if b == blk {
				return true, nil
			}
		}
	}
	for _, x := range in.Extents {
		if blk >= x.Disk && blk < x.Disk+uint64(x.Count) {
			return true, nil
		}
	}
	return false, nil
}

// retryOr passes on the transaction's start-over request; other errors
// (damage) are left to the check to report as it finds them.
func (tx *Tx) retryOr(err error) error {
	if tx.retry != nil {
		return tx.retry
	}
	return nil
}

type checkMark struct{ problems, claimed, dirs, files int }

func (c *checker) mark() checkMark {
	return checkMark{len(c.rep.Problems), len(c.claimed), c.rep.Dirs, c.rep.Files}
}

// rollback forgets what was found since m (a transaction that starts over
// looks again).
func (c *checker) rollback(m checkMark) {
	c.rep.Problems = c.rep.Problems[:m.problems]
	for _, blk := range c.claimed[m.claimed:] {
		delete(c.owner, blk)
	}
	c.claimed = c.claimed[:m.claimed]
	c.rep.Dirs, c.rep.Files = m.dirs, m.files
}
