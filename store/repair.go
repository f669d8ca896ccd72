package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sort"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
)

// RepairOptions shape an offline repair.
type RepairOptions struct {
	// Slot is the store slot whose journal the repair's changes go
	// through; -1 picks the first slot whose journal holds no records
	// waiting for a recovery handler.
	Slot int
	// MaxPasses bounds how often the tree is scanned and fixed again (a
	// fix can uncover more: a directory cut loose leaves orphans); 0
	// means 6.
	MaxPasses int
	// Logger gets log lines; nil means none.
	Logger hclog.Logger
}

// RepairReport says what Repair did and what is still wrong.
type RepairReport struct {
	// Replayed are the journals replayed first (their committed
	// transactions written in place).
	Replayed []ReplayStats `json:"replayed,omitempty"`
	// Repairs are the changes made, each naming block, inode and path,
	// in the order made.
	Repairs []Problem `json:"repairs"`
	// Notes are things left as they are on purpose (records pending for
	// a node's recovery handlers).
	Notes []string `json:"notes,omitempty"`
	// Left are the problems a check after the repair still finds.
	Left []Problem `json:"left"`
	// Slot is the slot whose journal the repair wrote through.
	Slot int `json:"slot"`
	// Passes is how many scans ran.
	Passes int `json:"passes"`
}

// Repaired reports whether the repair changed anything.
func (r *RepairReport) Repaired() bool { return len(r.Repairs) > 0 || len(r.Replayed) > 0 }

// Clean reports whether the check after the repair found nothing.
func (r *RepairReport) Clean() bool { return len(r.Left) == 0 }

// ErrNoRepairSlot: every slot's journal holds application records that
// only the nodes' recovery handlers can finish, so the repair has no
// journal to write through. Start a node (its recovery hands them over),
// then repair.
var ErrNoRepairSlot = errors.New("store: no slot free of pending records for the repair's journal")

// Repair checks the store on dev offline and repairs what it finds, as
// e2fsck and fsck.gfs2 do. No node may have the store open (the caller
// makes sure: the volume's open-volume markers). In order:
//
//   - journals whose both header copies are unreadable are emptied (their
//     transactions are lost; said in Repairs);
//   - journals holding committed transactions are replayed (the images go
//     in place; application records stay pending for a node's recovery
//     handlers, said in Notes);
//   - the tree is walked from the root and fixed: entries naming missing,
//     removed, wrong-generation or already named inodes are removed;
//     directory leaves and extent blocks that cannot be read from any
//     copy are cut off (what depended on them is cleared); link counts,
//     parents and entry counts are set; extents past the size or over
//     blocks the tree cannot use are cut; a data block two files use is
//     copied for the later one; inodes nobody names are linked into
//     /lost+found as #INO; every allocation group's bitmap is made to
//     match the blocks the tree uses (leaked blocks freed, used ones
//     marked), a header that cannot be read is rebuilt.
//
// Every change goes through a journal transaction of one slot, so a
// repair cut short by a crash is finished by the next one (which replays
// it first). A repair of a clean store changes nothing. Metadata blocks
// are read through VerifiedReader when dev is one (a mirror volume):
// a copy damaged on one leg is rewritten from a good one. The report's
// Left lists what a check afterwards still finds (none when the repair
// succeeded). Errors: ErrNotStore/ErrCorrupt for a superblock that cannot
// be read from any copy, ErrNoRepairSlot, ErrNoSpace when lost+found or a
// copy finds no room (run again after freeing space), device errors.
func Repair(ctx context.Context, dev blockdev.Device, opts RepairOptions) (*RepairReport, error) {
	if opts.MaxPasses <= 0 {
		opts.MaxPasses = 6
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if dev == nil || dev.BlockSize() <= 0 || BlockSize%dev.BlockSize() != 0 {
		return nil, errors.New("store: Repair needs a device whose block size divides 4096")
	}
	rep := &RepairReport{Slot: -1}
	sb, err := readSuperblockVerified(ctx, dev)
	if err != nil {
		return rep, err
	}
	raw := &Store{dev: dev, sb: sb}
	cr := newCopyReader(ctx, raw)
	slot, err := prepareJournals(ctx, raw, cr, opts.Slot, rep)
	if err != nil {
		return rep, err
	}
	rep.Slot = slot
	h, err := raw.readJournalHeader(ctx, slot)
	if err != nil {
		return rep, err
	}
	cfg := DefaultConfig(dev, slot, NewMemLocks().Node("repair"))
	cfg.Owner, cfg.Logger = h.Owner, opts.Logger
	if len(cfg.Owner) > maxOwner {
		cfg.Owner = ""
	}
	st, err := Open(ctx, cfg)
	if err != nil {
		return rep, fmt.Errorf("store: opening slot %d for the repair: %w", slot, err)
	}
	err = st.repairDirty(ctx, rep)
	if err == nil {
		err = st.repairPasses(ctx, cr, opts.MaxPasses, rep)
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return rep, err
	}
	final, err := CheckDevice(ctx, dev)
	if err != nil {
		return rep, err
	}
	rep.Left = final.Problems
	return rep, nil
}

// readSuperblockVerified reads the superblock, from every copy if the
// first does not decode.
func readSuperblockVerified(ctx context.Context, dev blockdev.Device) (*Superblock, error) {
	sb, err := ReadSuperblock(ctx, dev)
	if err == nil {
		return sb, nil
	}
	vr, ok := dev.(VerifiedReader)
	if !ok || dev.Size() < BlockSize {
		return nil, err
	}
	b := make([]byte, BlockSize)
	if vr.ReadVerified(ctx, b, 0, func(p []byte) bool { _, e := DecodeSuperblock(p); return e == nil }) != nil {
		return nil, fmt.Errorf("%w (no copy is good; nothing repaired)", err)
	}
	return ReadSuperblock(ctx, dev)
}

// copyReader reads metadata blocks for the repair. On a device keeping
// copies (VerifiedReader) it reads every copy: a damaged one is rewritten
// from a good one by the device, and the block is noted for the report.
type copyReader struct {
	ctx       context.Context
	s         *Store
	vr        VerifiedReader
	rewritten []rewrite
}

type rewrite struct {
	blk       uint64
	bad, good int
}

func newCopyReader(ctx context.Context, s *Store) *copyReader {
	c := &copyReader{ctx: ctx, s: s}
	c.vr, _ = s.dev.(VerifiedReader)
	return c
}

func (c *copyReader) read(blk uint64) ([]byte, error) {
	if c.vr != nil && blk < c.s.sb.Blocks {
		b := make([]byte, BlockSize)
		bad, good := 0, 0
		valid := func(p []byte) bool { // called on every copy
			_, err := openBlock(p, blk, 0)
			if err != nil {
				bad++
			} else {
				good++
			}
			return err == nil
		}
		if c.vr.ReadVerified(c.ctx, b, int64(blk)*BlockSize, valid) == nil {
			if bad > 0 {
				c.rewritten = append(c.rewritten, rewrite{blk, bad, good + bad})
			}
			return b, nil
		}
	}
	return c.s.readBlock(c.ctx, blk)
}

// drain reports the blocks rewritten from a good copy since the last
// drain, each named by who uses it.
func (c *copyReader) drain(name func(blk uint64) (uint64, string)) []Problem {
	var out []Problem
	for _, r := range c.rewritten {
		ino, p := name(r.blk)
		out = append(out, Problem{Block: r.blk, Ino: ino, Path: p,
			What: fmt.Sprintf("metadata block damaged on %d of %d copies: rewritten from a good copy", r.bad, r.good)})
	}
	c.rewritten = nil
	return out
}

// prepareJournals empties journals whose header is gone and picks the
// repair's slot.
func prepareJournals(ctx context.Context, s *Store, cr *copyReader, want int, rep *RepairReport) (int, error) {
	if want >= int(s.sb.Slots) {
		return 0, fmt.Errorf("store: repair slot %d, the store has %d slots", want, s.sb.Slots)
	}
	pick := -1
	for slot := 0; slot < int(s.sb.Slots); slot++ {
		start := s.sb.journalStart(slot)
		// A header damaged on one copy of the device is rewritten from
		// a good one first.
		cr.read(start)
		cr.read(start + 1)
		rep.Repairs = append(rep.Repairs, cr.drain(func(uint64) (uint64, string) { return 0, "" })...)
		h, err := s.readJournalHeader(ctx, slot)
		if err != nil {
			nh := journalHeader{TailPos: journalData, TailSeq: rand.Uint64N(1<<62) + 1}
			nh.AppliedSeq = nh.TailSeq - 1
			for v := uint64(0); v < 2; v++ {
				nh.Version = v
				if err := s.writeBlocks(ctx, start+v, nh.encode(start+v, slot)); err != nil {
					return 0, err
				}
			}
			if err := s.dev.Flush(ctx); err != nil {
				return 0, err
			}
			rep.Repairs = append(rep.Repairs, Problem{Block: start, What: fmt.Sprintf("journal of slot %d: both header copies unreadable (%v): emptied; its transactions and records are lost", slot, err)})
			h = &nh
		}
		_, plan, _, err := s.scanJournal(ctx, slot, h)
		if err != nil {
			return 0, err
		}
		if n := len(plan.Pending()); n > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("journal of slot %d holds %d records for the nodes' recovery handlers: left for the node that opens or recovers the slot", slot, n))
			if slot == want {
				return 0, fmt.Errorf("%w: slot %d holds %d", ErrNoRepairSlot, slot, n)
			}
			continue
		}
		if pick < 0 && (want < 0 || want == slot) {
			pick = slot
		}
	}
	if pick < 0 {
		return 0, ErrNoRepairSlot
	}
	return pick, nil
}

// repairDirty replays (images only) every other slot's journal that
// holds transactions not in place; records stay pending.
func (s *Store) repairDirty(ctx context.Context, rep *RepairReport) error {
	for slot := 0; slot < int(s.sb.Slots); slot++ {
		if slot == s.slot {
			continue
		}
		dirty, err := s.journalDirty(ctx, slot)
		if err != nil {
			return err
		}
		if !dirty {
			continue
		}
		g := s.glockFor(classSlot, uint64(slot))
		if err := g.acquire(ctx, Exclusive, false, true); err != nil {
			return err
		}
		st, err := s.recoverSlot(ctx, slot, false, false)
		if perr := g.put(Exclusive, true); err == nil {
			err = perr
		}
		if err != nil {
			return fmt.Errorf("store: replaying the journal of slot %d: %w", slot, err)
		}
		rep.Replayed = append(rep.Replayed, st)
		rep.Repairs = append(rep.Repairs, Problem{Block: s.sb.journalStart(slot), What: fmt.Sprintf("journal of slot %d replayed: %d transactions, %d blocks written in place", slot, st.Applied, st.Blocks)})
	}
	return nil
}

// repairPasses scans and fixes until a scan finds nothing (or maxPasses).
func (s *Store) repairPasses(ctx context.Context, cr *copyReader, maxPasses int, rep *RepairReport) error {
	for pass := 0; pass < maxPasses; pass++ {
		// The scan reads the device itself: what the repair committed
		// so far goes in place first (commits leave it to the
		// checkpoint).
		if err := s.checkpoint(ctx); err != nil {
			return err
		}
		rep.Passes++
		r := newRepairScan(ctx, s.sb, cr.read)
		if err := r.scan(); err != nil {
			return err
		}
		rep.Repairs = append(rep.Repairs, cr.drain(func(blk uint64) (uint64, string) {
			o := r.owner[blk]
			return o.ino, o.path
		})...)
		markUsed, final := r.bitmaps()
		if !r.changed() && len(r.orphans) == 0 && len(r.copies) == 0 {
			return nil
		}
		rep.Repairs = append(rep.Repairs, r.done...)
		// Blocks in use are marked first: what the tree fixes cut loose
		// (orphans among it) stays allocated if the repair stops here.
		if err := s.writeAGHeaders(ctx, markUsed); err != nil {
			return err
		}
		if err := s.writeFixes(ctx, r.fixes); err != nil {
			return err
		}
		if err := s.writeAGHeaders(ctx, final); err != nil {
			return err
		}
		if err := s.linkOrphans(ctx, r.orphans, rep); err != nil {
			return err
		}
		if err := s.copyShared(ctx, r.copies); err != nil {
			return err
		}
	}
	return nil
}

// txImages is how many block images one repair transaction carries.
func (s *Store) txImages() int {
	return max(1, min(maxTxImages, int(s.sb.JournalBlocks)/2-4))
}

func (s *Store) writeAGHeaders(ctx context.Context, hs map[int]*agHeader) error {
	ags := make([]int, 0, len(hs))
	for ag := range hs {
		ags = append(ags, ag)
	}
	sort.Ints(ags)
	for len(ags) > 0 {
		n := min(len(ags), s.txImages())
		batch := ags[:n]
		ags = ags[n:]
		err := s.run(ctx, false, func(tx *Tx) error {
			for _, ag := range batch {
				g := s.glockFor(classAG, uint64(ag))
				if err := tx.lock(g, Exclusive); err != nil {
					return err
				}
				start, _ := s.sb.agRange(ag)
				if err := tx.write(g, start, hs[ag].encode(start)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: repair: writing allocation group headers: %w", err)
		}
	}
	return nil
}

// writeFixes writes the new images of the inodes the scan fixed, an
// inode's other blocks before the inode block.
func (s *Store) writeFixes(ctx context.Context, fixes map[uint64]*inodeFix) error {
	inos := make([]uint64, 0, len(fixes))
	for ino := range fixes {
		inos = append(inos, ino)
	}
	sort.Slice(inos, func(i, j int) bool { return inos[i] < inos[j] })
	type img struct {
		g   *glock
		blk uint64
		b   []byte
	}
	var all []img
	for _, ino := range inos {
		f := fixes[ino]
		g := s.glockFor(classInode, ino)
		blks := make([]uint64, 0, len(f.blocks))
		for blk := range f.blocks {
			blks = append(blks, blk)
		}
		sort.Slice(blks, func(i, j int) bool { return blks[i] < blks[j] })
		for _, blk := range blks {
			all = append(all, img{g, blk, f.blocks[blk]})
		}
		all = append(all, img{g, ino, f.in.encode()})
	}
	for len(all) > 0 {
		n := min(len(all), s.txImages())
		batch := all[:n]
		all = all[n:]
		err := s.run(ctx, false, func(tx *Tx) error {
			for _, im := range batch {
				if err := tx.lock(im.g, Exclusive); err != nil {
					return err
				}
				if err := tx.write(im.g, im.blk, im.b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: repair: writing fixed inodes: %w", err)
		}
	}
	return nil
}

// lostFound finds or makes the root's lost+found directory.
func (tx *Tx) lostFound() (*inode, *glock, error) {
	root, rg, err := tx.getInode(tx.s.sb.Root, Exclusive)
	if err != nil {
		return nil, nil, err
	}
	name := "lost+found"
	for i := 1; ; i++ {
		de, ok, err := tx.lookup(rg, root, name)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			break
		}
		if de.Type == typeDir {
			return tx.child(de, Exclusive)
		}
		if i > 9 {
			return nil, nil, fmt.Errorf("%w: no name for lost+found in the root", fs.ErrExist)
		}
		name = fmt.Sprintf("lost+found.%d", i)
	}
	lf, lg, err := tx.newInode(typeDir, 0o700, root.Ino)
	if err != nil {
		return nil, nil, err
	}
	if err := tx.addEntry(rg, root, dirEntry{Name: name, Ino: lf.Ino, Gen: lf.Gen, Type: typeDir}); err != nil {
		return nil, nil, err
	}
	root.Mtime = tx.s.now()
	if err := tx.putInode(rg, root); err != nil {
		return nil, nil, err
	}
	return lf, lg, tx.putInode(lg, lf)
}

// linkOrphans links the orphans into lost+found as #INO.
func (s *Store) linkOrphans(ctx context.Context, orphans []orphan, rep *RepairReport) error {
	for len(orphans) > 0 {
		n := min(len(orphans), max(1, s.txImages()/4))
		batch := orphans[:n]
		orphans = orphans[n:]
		var skipped []string
		err := s.run(ctx, false, func(tx *Tx) error {
			skipped = nil
			lf, lg, err := tx.lostFound()
			if err != nil {
				return err
			}
			for _, o := range batch {
				in, g, err := tx.getInode(o.ino, Exclusive)
				if err != nil || in.Gen != o.gen || in.Nlink == 0 {
					skipped = append(skipped, fmt.Sprintf("%s: inode %d: orphan not linked: it changed or cannot be read (%v)", o.path, o.ino, err))
					continue
				}
				name := fmt.Sprintf("#%d", o.ino)
				if _, ok, err := tx.lookup(lg, lf, name); err != nil {
					return err
				} else if ok {
					continue
				}
				if err := tx.addEntry(lg, lf, dirEntry{Name: name, Ino: in.Ino, Gen: in.Gen, Type: in.Type}); err != nil {
					return err
				}
				if in.Type == typeDir && in.Parent != lf.Ino {
					in.Parent = lf.Ino
					if err := tx.putInode(g, in); err != nil {
						return err
					}
				}
			}
			lf.Mtime = s.now()
			return tx.putInode(lg, lf)
		})
		if err != nil {
			return fmt.Errorf("store: repair: linking orphans into lost+found: %w", err)
		}
		rep.Notes = append(rep.Notes, skipped...)
	}
	return nil
}

// copyShared gives each file that shares a data block with an earlier
// one a copy of its own.
func (s *Store) copyShared(ctx context.Context, copies []dataCopy) error {
	for _, c := range copies {
		err := s.run(ctx, false, func(tx *Tx) error {
			in, g, err := tx.getInode(c.ino, Exclusive)
			if err != nil {
				return err
			}
			if in.Type != typeFile || extFind(in.Extents, c.fb) != c.disk {
				return nil // changed meanwhile (an earlier fix)
			}
			blk, err := tx.allocOne()
			if err != nil {
				return err
			}
			buf := make([]byte, BlockSize)
			if err := tx.readDataBlock(in.Ino, c.disk, buf); err != nil {
				return err
			}
			tx.data = append(tx.data, dataWrite{blk, buf})
			tx.pend[blk] = buf
			in.Extents, _ = extUnmap(in.Extents, c.fb, 1) // the other file keeps the block
			in.Extents = extMap(in.Extents, c.fb, blk, 1)
			return tx.putInode(g, in)
		})
		if err != nil {
			return fmt.Errorf("store: repair: copying block %d for inode %d (%s): %w", c.disk, c.ino, c.path, err)
		}
	}
	return nil
}
