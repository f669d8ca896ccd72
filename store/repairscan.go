package store

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"sort"
)

// The repair scan is the deciding half of Repair: it reads the tree as it
// is on the device (no writes), walks it from the root as CheckDevice
// does, and decides what each problem's fix is: new images of the
// directories, inodes and extent lists to rewrite, the inodes nobody
// names (orphans, for lost+found), the data blocks two files share (the
// later one gets a copy) and the bitmaps every allocation group should
// have. Repair then writes what it decided, in journal transactions.

// rclaim is who uses a block: an inode, as metadata or as file data.
type rclaim struct {
	ino  uint64
	data bool
	path string
}

// inodeFix is the new state of one inode: the inode block, and the other
// blocks it owns that change (directory leaves, extent list blocks).
type inodeFix struct {
	in     *inode
	blocks map[uint64][]byte // leaf / extent block images besides the inode
}

// dataCopy asks for file block fb of inode ino, mapped to a block another
// inode uses too, to get a copy of its own.
type dataCopy struct {
	ino  uint64
	path string
	fb   uint64
	disk uint64
}

// orphan is an inode no directory names, to be linked into lost+found.
type orphan struct {
	ino  uint64
	gen  uint32
	typ  uint8
	path string // the path it gets: /lost+found/#ino
}

type repairScan struct {
	ctx  context.Context
	sb   *Superblock
	read func(blk uint64) ([]byte, error) // metadata read, every copy tried

	owner   map[uint64]rclaim
	fixes   map[uint64]*inodeFix
	copies  []dataCopy
	orphans []orphan
	done    []Problem // what the fixes do, in the order decided
	maxGen  map[int]uint32

	// agBad: allocation groups whose header is unreadable (rebuilt).
	agBad map[int]bool
	ags   map[int]*agHeader // readable headers as found
}

func newRepairScan(ctx context.Context, sb *Superblock, read func(uint64) ([]byte, error)) *repairScan {
	return &repairScan{ctx: ctx, sb: sb, read: read, owner: map[uint64]rclaim{}, fixes: map[uint64]*inodeFix{},
		maxGen: map[int]uint32{}, agBad: map[int]bool{}, ags: map[int]*agHeader{}}
}

func (r *repairScan) did(blk, ino uint64, p, f string, a ...any) {
	r.done = append(r.done, Problem{Block: blk, Ino: ino, Path: p, What: fmt.Sprintf(f, a...)})
}

// changed reports whether the scan decided anything to write.
func (r *repairScan) changed() bool {
	return len(r.done) > 0
}

// inAGs says whether blk may be used by the tree (inside the groups, not
// a group header); else why not.
func (r *repairScan) usable(blk uint64) (string, bool) {
	if blk < r.sb.AGStart || blk >= r.sb.Blocks {
		return "outside the allocation groups", false
	}
	ag, start := r.sb.agOf(blk)
	if blk == start {
		return fmt.Sprintf("the header of allocation group %d", ag), false
	}
	return "", true
}

func (r *repairScan) fixOf(in *inode) *inodeFix {
	f := r.fixes[in.Ino]
	if f == nil {
		f = &inodeFix{in: in, blocks: map[uint64][]byte{}}
		r.fixes[in.Ino] = f
	}
	f.in = in
	return f
}

func (r *repairScan) noteGen(blk uint64, gen uint32) {
	ag, _ := r.sb.agOf(blk)
	if gen > r.maxGen[ag] {
		r.maxGen[ag] = gen
	}
}

// scan walks the tree from the root, finds orphans and decides the
// bitmaps.
func (r *repairScan) scan() error {
	root := r.sb.Root
	var rin *inode
	b, err := r.read(root)
	if err == nil {
		rin, err = decodeInode(b, root)
	}
	switch {
	case err != nil:
		rin = r.newRoot(1)
		r.did(root, root, "/", "root directory unreadable (%v): made an empty root; what it held goes to /lost+found", err)
	case rin.Type != typeDir:
		rin = r.newRoot(rin.Gen + 1)
		r.did(root, root, "/", "root is not a directory: made an empty root")
	}
	r.owner[root] = rclaim{ino: root, path: "/"}
	r.noteGen(root, rin.Gen)
	if rin.Nlink != 1 || rin.Parent != root {
		r.did(root, root, "/", "root has %d links and parent %d: set to 1 and itself", rin.Nlink, rin.Parent)
		rin.Nlink, rin.Parent = 1, root
		r.fixOf(rin)
	}
	if err := r.walkDir(rin, "/"); err != nil {
		return err
	}
	if err := r.findOrphans(); err != nil {
		return err
	}
	return r.ctx.Err()
}

func (r *repairScan) newRoot(gen uint32) *inode {
	in := &inode{Ino: r.sb.Root, Gen: gen, Type: typeDir, Mode: 0o755, Nlink: 1, Parent: r.sb.Root, Buckets: make([]uint64, dirBuckets)}
	r.fixOf(in)
	return in
}

// walkDir checks directory dir (claimed, decoded) at path p and, depth
// first, everything under it.
func (r *repairScan) walkDir(dir *inode, p string) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	subdirs := r.checkDir(dir, p)
	for _, sd := range subdirs {
		if err := r.walkDir(sd.in, sd.path); err != nil {
			return err
		}
	}
	return nil
}

type subdir struct {
	in   *inode
	path string
}

// checkDir checks dir's leaves and entries; it returns the subdirectories
// to walk.
func (r *repairScan) checkDir(dir *inode, p string) []subdir {
	var subdirs []subdir
	changed := false
	leaves := map[uint64][]byte{}
	names := map[string]bool{}
	seen := map[uint64]bool{} // leaves of this directory looked at (an emptied one is no longer claimed)
	var count uint64
	for bucket := range dir.Buckets {
		var prev *dirLeaf
		var prevBlk uint64
		setNext := func(next uint64) {
			if prev == nil {
				dir.Buckets[bucket] = next
			} else {
				prev.Next = next
				leaves[prevBlk] = prev.encode(prevBlk, dir.Ino, dir.Gen)
			}
			changed = true
		}
		for blk := dir.Buckets[bucket]; blk != 0; {
			l, why := r.leaf(dir, blk)
			if seen[blk] {
				why = fmt.Sprintf("%d comes again (the chain loops)", blk)
			}
			if why != "" {
				r.did(blk, dir.Ino, p, "directory leaf %s: chain of bucket %d cut there (the inodes its entries named go to /lost+found)", why, bucket)
				setNext(0)
				break
			}
			seen[blk] = true
			r.owner[blk] = rclaim{ino: dir.Ino, path: p}
			kept := l.Entries[:0:0]
			for _, e := range l.Entries {
				cp := path.Join(p, e.Name)
				switch {
				case bucketOf(e.Name) != bucket:
					r.did(blk, dir.Ino, p, "entry %q in bucket %d, hashes to %d: removed (its inode goes to /lost+found)", e.Name, bucket, bucketOf(e.Name))
					continue
				case names[e.Name]:
					r.did(blk, dir.Ino, p, "entry %q twice: the later one (inode %d) removed", e.Name, e.Ino)
					continue
				}
				kid, why := r.child(e, dir.Ino, cp)
				if kid == nil {
					r.did(e.Ino, e.Ino, cp, "entry (in directory leaf %d) removed: %s", blk, why)
					continue
				}
				names[e.Name] = true
				kept = append(kept, e)
				if kid.Type == typeDir {
					subdirs = append(subdirs, subdir{kid, cp})
				} else {
					r.checkFile(kid, cp)
				}
			}
			next := l.Next
			switch {
			case len(kept) == 0:
				// An empty leaf is unlinked (and freed with the bitmaps).
				delete(r.owner, blk)
				if len(l.Entries) == 0 {
					r.did(blk, dir.Ino, p, "empty directory leaf in bucket %d: unlinked", bucket)
				}
				setNext(next)
				delete(leaves, blk)
			case len(kept) != len(l.Entries):
				l.Entries = kept
				leaves[blk] = l.encode(blk, dir.Ino, dir.Gen)
				changed = true
				prev, prevBlk = l, blk
			default:
				prev, prevBlk = l, blk
			}
			count += uint64(len(kept))
			blk = next
		}
	}
	if count != dir.Entries {
		r.did(dir.Ino, dir.Ino, p, "directory counts %d entries, has %d: count set", dir.Entries, count)
		dir.Entries = count
		changed = true
	}
	if changed {
		f := r.fixOf(dir)
		for blk, img := range leaves {
			f.blocks[blk] = img
		}
	}
	return subdirs
}

// leaf reads leaf blk of dir if it is good and nobody else uses it.
func (r *repairScan) leaf(dir *inode, blk uint64) (*dirLeaf, string) {
	var l *dirLeaf
	why := r.owned(dir, blk, func(b []byte) (h blockHeader, err error) {
		l, h, err = decodeDirLeaf(b, blk)
		return h, err
	})
	return l, why
}

// owned checks that metadata block blk of inode in may be used, nobody
// else uses it, it decodes and its header names in; else it says why not.
func (r *repairScan) owned(in *inode, blk uint64, decode func([]byte) (blockHeader, error)) string {
	if why, ok := r.usable(blk); !ok {
		return fmt.Sprintf("%d is %s", blk, why)
	}
	if o, ok := r.owner[blk]; ok {
		return fmt.Sprintf("%d is also used by inode %d", blk, o.ino)
	}
	b, err := r.read(blk)
	if err != nil {
		return fmt.Sprintf("%d unreadable (%v)", blk, err)
	}
	h, err := decode(b)
	if err != nil {
		return fmt.Sprintf("%d unreadable (%v)", blk, err)
	}
	if h.Owner != in.Ino || h.Gen != in.Gen {
		return fmt.Sprintf("%d belongs to inode %d generation %d", blk, h.Owner, h.Gen)
	}
	return ""
}

// child checks the inode entry e of directory parent names, claims it and
// returns it; nil (and why) when the entry must go.
func (r *repairScan) child(e dirEntry, parent uint64, p string) (*inode, string) {
	if why, ok := r.usable(e.Ino); !ok {
		return nil, fmt.Sprintf("inode %d is %s", e.Ino, why)
	}
	if o, ok := r.owner[e.Ino]; ok {
		if o.ino == e.Ino && !o.data {
			return nil, fmt.Sprintf("inode %d is named already at %s", e.Ino, o.path)
		}
		return nil, fmt.Sprintf("inode block %d is used by inode %d", e.Ino, o.ino)
	}
	b, err := r.read(e.Ino)
	if err != nil {
		return nil, fmt.Sprintf("inode unreadable (%v)", err)
	}
	in, err := decodeInode(b, e.Ino)
	if err != nil {
		return nil, fmt.Sprintf("inode unreadable (%v)", err)
	}
	r.noteGen(e.Ino, in.Gen)
	switch {
	case in.Nlink == 0:
		return nil, fmt.Sprintf("inode %d was removed (no links)", e.Ino)
	case in.Gen != e.Gen || in.Type != e.Type:
		return nil, fmt.Sprintf("entry says generation %d type %d, inode has generation %d type %d", e.Gen, e.Type, in.Gen, in.Type)
	}
	r.claimInode(in, parent, p)
	return in, ""
}

// claimInode claims an inode about to be linked under parent and fixes
// its links and parent.
func (r *repairScan) claimInode(in *inode, parent uint64, p string) {
	r.owner[in.Ino] = rclaim{ino: in.Ino, path: p}
	if in.Nlink != 1 {
		r.did(in.Ino, in.Ino, p, "inode has %d links, one entry names it: set to 1", in.Nlink)
		in.Nlink = 1
		r.fixOf(in)
	}
	if in.Type == typeDir && parent != 0 && in.Parent != parent {
		r.did(in.Ino, in.Ino, p, "directory's parent is inode %d, it is in inode %d: set", in.Parent, parent)
		in.Parent = parent
		r.fixOf(in)
	}
}

// checkFile checks a file's extent list and data blocks.
func (r *repairScan) checkFile(in *inode, p string) {
	if in.Layout == layoutInline {
		return
	}
	changed, lostTail := false, false
	var chain []uint64
	if in.Layout == layoutOverflow {
		var exts []Extent
		for blk := in.ExtBlk; blk != 0; {
			x, why := r.extentBlock(in, blk)
			if why != "" {
				r.did(blk, in.Ino, p, "extent block %s: the file's data from there on is lost", why)
				changed, lostTail = true, true
				break
			}
			r.owner[blk] = rclaim{ino: in.Ino, path: p}
			chain = append(chain, blk)
			exts = append(exts, x.Extents...)
			blk = x.Next
		}
		in.Extents = exts
	}
	var out []Extent
	var prevEnd uint64
	lastFB := uint64(0)
	if in.Size > 0 {
		lastFB = uint64((in.Size - 1) / BlockSize)
	}
	for i, x := range in.Extents {
		if x.Count == 0 || (len(out) > 0 && x.File < prevEnd) {
			r.did(in.Ino, in.Ino, p, "extent %d (file block %d, %d blocks) empty or out of order: removed", i, x.File, x.Count)
			changed = true
			continue
		}
		if in.Size == 0 || x.File > lastFB {
			r.did(in.Ino, in.Ino, p, "extent %d maps file block %d, past the size %d: removed", i, x.File, in.Size)
			changed = true
			continue
		}
		if end := x.File + uint64(x.Count) - 1; end > lastFB {
			r.did(in.Ino, in.Ino, p, "extent %d maps file block %d, past the size %d: cut to %d blocks", i, end, in.Size, lastFB-x.File+1)
			x.Count = uint32(lastFB - x.File + 1)
			changed = true
		}
		// Blocks that may not be file data end the extent there (the
		// rest reads as zeros); blocks another file uses get a copy.
		for k := uint32(0); k < x.Count; k++ {
			d := x.Disk + uint64(k)
			if why, ok := r.usable(d); !ok {
				r.did(d, in.Ino, p, "data block %d (file block %d) is %s: unmapped from there, %d blocks read as zeros", d, x.File+uint64(k), why, x.Count-k)
				x.Count = k
				changed = true
				break
			}
			o, taken := r.owner[d]
			switch {
			case !taken:
				r.owner[d] = rclaim{ino: in.Ino, data: true, path: p}
			case o.data:
				r.copies = append(r.copies, dataCopy{ino: in.Ino, path: p, fb: x.File + uint64(k), disk: d})
				r.did(d, in.Ino, p, "data block %d (file block %d) also used by inode %d (%s): this file gets a copy", d, x.File+uint64(k), o.ino, o.path)
			default:
				r.did(d, in.Ino, p, "data block %d (file block %d) is metadata of inode %d: unmapped from there, %d blocks read as zeros", d, x.File+uint64(k), o.ino, x.Count-k)
				x.Count = k
				changed = true
			}
			if x.Count == k {
				break
			}
		}
		if x.Count == 0 {
			continue
		}
		out = append(out, x)
		prevEnd = x.File + uint64(x.Count)
	}
	if !changed {
		return
	}
	in.Extents = out
	r.layoutExtents(in, chain, lostTail, p)
}

// layoutExtents rewrites in's extent list (in.Extents) inline or over the
// chain blocks it kept (never more: extents were only removed or cut).
func (r *repairScan) layoutExtents(in *inode, chain []uint64, lostTail bool, p string) {
	f := r.fixOf(in)
	need := 0
	if len(in.Extents) > inlineExtents {
		need = (len(in.Extents) + extentsPerBlk - 1) / extentsPerBlk
	}
	if need > len(chain) {
		// Cannot happen (extents were only removed): keep what fits.
		keep := len(chain) * extentsPerBlk
		if len(chain) == 0 {
			keep = inlineExtents
		}
		r.did(in.Ino, in.Ino, p, "extent list cut to %d extents", keep)
		in.Extents = in.Extents[:keep]
		need = len(chain)
		if len(in.Extents) <= inlineExtents {
			need = 0
		}
	}
	for _, blk := range chain[need:] {
		delete(r.owner, blk)
	}
	if need == 0 {
		in.Layout, in.ExtBlk = layoutExtents, 0
	} else {
		in.Layout, in.ExtBlk = layoutOverflow, chain[0]
		for i, blk := range chain[:need] {
			lo, hi := i*extentsPerBlk, min((i+1)*extentsPerBlk, len(in.Extents))
			x := &extentBlock{Extents: in.Extents[lo:hi]}
			if i+1 < need {
				x.Next = chain[i+1]
			}
			f.blocks[blk] = x.encode(blk, in.Ino, in.Gen)
		}
	}
	// Data past the last extent kept was lost with the chain: the file
	// ends with what is left (holes inside stay holes).
	end := int64(0)
	if n := len(in.Extents); n > 0 {
		end = int64(in.Extents[n-1].File+uint64(in.Extents[n-1].Count)) * BlockSize
	}
	if lostTail && end < in.Size {
		r.did(in.Ino, in.Ino, p, "size %d cut to %d, the end of the data left", in.Size, end)
		in.Size = end
	}
}

// extentBlock reads overflow extent block blk of in if it is good and
// nobody else uses it.
func (r *repairScan) extentBlock(in *inode, blk uint64) (*extentBlock, string) {
	var x *extentBlock
	why := r.owned(in, blk, func(b []byte) (h blockHeader, err error) {
		x, h, err = decodeExtentBlock(b, blk)
		return h, err
	})
	return x, why
}

// findOrphans looks at every block the tree does not use but the
// bitmaps do (every block of a group whose header is unreadable): live
// inodes there are orphans. The ones no other orphan names go to
// lost+found with everything under them.
func (r *repairScan) findOrphans() error {
	cands := map[uint64]*inode{}
	for ag := 0; ag < int(r.sb.AGCount); ag++ {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		start, n := r.sb.agRange(ag)
		b, err := r.read(start)
		var h *agHeader
		if err == nil {
			h, err = decodeAGHeader(b, start)
		}
		if err == nil && !h.fits(r.sb, ag) {
			err = fmt.Errorf("bitmap of %d bytes for %d blocks", len(h.Bitmap), n)
		}
		if err != nil {
			h = nil // a header of the wrong size is no guide to the blocks below
			r.agBad[ag] = true
			r.did(start, 0, "", "allocation group %d header unreadable (%v): rebuilt from the blocks the tree uses", ag, err)
		} else {
			r.ags[ag] = h
		}
		for i := uint32(1); i < n; i++ {
			blk := start + uint64(i)
			if _, ok := r.owner[blk]; ok || (h != nil && !bitGet(h.Bitmap, i)) {
				continue
			}
			b, err := r.read(blk)
			if err != nil {
				continue
			}
			if _, err := openBlock(b, blk, KindInode); err != nil {
				continue
			}
			in, err := decodeInode(b, blk)
			if err != nil {
				continue
			}
			r.noteGen(blk, in.Gen)
			if in.Nlink > 0 {
				cands[blk] = in
			}
		}
	}
	for len(cands) > 0 {
		// Orphans other orphans name are reached through those.
		named := map[uint64]bool{}
		for _, in := range cands {
			if in.Type != typeDir {
				continue
			}
			for _, first := range in.Buckets {
				for blk, n := first, 0; blk != 0 && n < 1024; n++ {
					if _, ok := r.owner[blk]; ok {
						break
					}
					l, why := r.leaf(in, blk)
					if why != "" {
						break
					}
					for _, e := range l.Entries {
						if c := cands[e.Ino]; c != nil && c.Gen == e.Gen && e.Ino != in.Ino {
							named[e.Ino] = true
						}
					}
					blk = l.Next
				}
			}
		}
		var tops []uint64
		for ino := range cands {
			if !named[ino] {
				tops = append(tops, ino)
			}
		}
		sort.Slice(tops, func(i, j int) bool { return tops[i] < tops[j] })
		if len(tops) == 0 {
			// A loop of directories naming each other: break it at the
			// lowest.
			for ino := range cands {
				if len(tops) == 0 || ino < tops[0] {
					tops = []uint64{ino}
				}
			}
		}
		for _, ino := range tops {
			in := cands[ino]
			delete(cands, ino)
			if _, ok := r.owner[ino]; ok {
				continue
			}
			p := fmt.Sprintf("/lost+found/#%d", ino)
			r.orphans = append(r.orphans, orphan{ino: ino, gen: in.Gen, typ: in.Type, path: p})
			r.did(ino, ino, p, "orphan inode (type %d, %d bytes) no directory names: linked into /lost+found", in.Type, in.Size)
			r.claimInode(in, 0, p) // the parent is set when it is linked
			if in.Type == typeDir {
				if err := r.walkDir(in, p); err != nil {
					return err
				}
			} else {
				r.checkFile(in, p)
			}
		}
		for ino := range cands {
			if _, ok := r.owner[ino]; ok {
				delete(cands, ino) // reached through an orphan directory
			}
		}
	}
	return nil
}

// bitmaps decides each allocation group's header from the blocks the
// tree uses: markUsed only sets bits (blocks used but marked free), final
// is the whole truth (leaked blocks freed). Both are nil for a group
// whose header is right.
func (r *repairScan) bitmaps() (markUsed, final map[int]*agHeader) {
	markUsed, final = map[int]*agHeader{}, map[int]*agHeader{}
	for ag := 0; ag < int(r.sb.AGCount); ag++ {
		start, n := r.sb.agRange(ag)
		want := &agHeader{Bitmap: make([]byte, (n+7)/8)}
		bitSet(want.Bitmap, 0)
		for i := uint32(1); i < n; i++ {
			if _, ok := r.owner[start+uint64(i)]; ok {
				bitSet(want.Bitmap, i)
			}
		}
		free := uint32(0)
		for i := uint32(0); i < n; i++ {
			if !bitGet(want.Bitmap, i) {
				free++
			}
		}
		want.Free = free
		old := r.ags[ag]
		if r.agBad[ag] || old == nil {
			want.NextGen = r.maxGen[ag] + 1
			markUsed[ag], final[ag] = want, want
			continue
		}
		want.NextGen = max(old.NextGen, r.maxGen[ag])
		if want.NextGen != old.NextGen {
			r.did(start, 0, "", "allocation group %d hands out generation %d next, inodes there have up to %d: raised", ag, old.NextGen+1, r.maxGen[ag])
		}
		mark := &agHeader{NextGen: want.NextGen, Bitmap: append([]byte(nil), old.Bitmap...)}
		var leaked []uint64
		for i := uint32(0); i < n; i++ {
			blk := start + uint64(i)
			used, should := bitGet(old.Bitmap, i), bitGet(want.Bitmap, i)
			switch {
			case should && !used:
				bitSet(mark.Bitmap, i)
				if i == 0 {
					r.did(blk, 0, "", "allocation group %d header marked free: marked used", ag)
				} else {
					o := r.owner[blk]
					r.did(blk, o.ino, o.path, "block in use by inode %d is marked free: marked used", o.ino)
				}
			case used && !should:
				leaked = append(leaked, blk)
			}
		}
		for _, run := range runsOf(leaked) {
			if run[1] == run[0] {
				r.did(run[0], 0, "", "block %d marked used in allocation group %d but not reachable (leaked): freed", run[0], ag)
			} else {
				r.did(run[0], 0, "", "blocks %d..%d (%d) marked used in allocation group %d but not reachable (leaked): freed", run[0], run[1], run[1]-run[0]+1, ag)
			}
		}
		mark.Free = 0
		for i := uint32(0); i < n; i++ {
			if !bitGet(mark.Bitmap, i) {
				mark.Free++
			}
		}
		oldFree := uint32(0)
		for i := uint32(0); i < n; i++ {
			if !bitGet(old.Bitmap, i) {
				oldFree++
			}
		}
		if old.Free != oldFree {
			r.did(start, 0, "", "allocation group %d counts %d free blocks, bitmap has %d: count set", ag, old.Free, oldFree)
		}
		if !bytes.Equal(mark.Bitmap, old.Bitmap) || mark.Free != old.Free || mark.NextGen != old.NextGen {
			markUsed[ag] = mark
		}
		if !bytes.Equal(want.Bitmap, old.Bitmap) || want.Free != old.Free || want.NextGen != old.NextGen {
			final[ag] = want
		}
	}
	return markUsed, final
}

// runsOf groups sorted block numbers into [first, last] runs.
func runsOf(blks []uint64) [][2]uint64 {
	var out [][2]uint64
	for _, b := range blks {
		if k := len(out); k > 0 && out[k-1][1]+1 == b {
			out[k-1][1] = b
			continue
		}
		out = append(out, [2]uint64{b, b})
	}
	return out
}
