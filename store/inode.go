package store

import (
	"fmt"
	"sort"
)

// getInode locks inode ino in mode for the transaction and reads it,
// overflow extents included.
func (tx *Tx) getInode(ino uint64, mode LockMode) (*inode, *glock, error) {
	s := tx.s
	if ino < s.sb.AGStart || ino >= s.sb.Blocks {
		return nil, nil, fmt.Errorf("%w: inode number %d outside the allocation groups", ErrCorrupt, ino)
	}
	g := s.glockFor(classInode, ino)
	if err := tx.lock(g, mode); err != nil {
		return nil, nil, err
	}
	b, err := tx.read(g, ino)
	if err != nil {
		return nil, nil, err
	}
	in, err := decodeInode(b, ino)
	if err != nil {
		return nil, nil, err
	}
	if in.Layout == layoutOverflow {
		if in.Extents, err = tx.readExtentChain(g, in); err != nil {
			return nil, nil, err
		}
	}
	return in, g, nil
}

// extentChain lists the blocks of an inode's overflow extent list.
func (tx *Tx) extentChain(g *glock, in *inode) ([]uint64, []*extentBlock, error) {
	var blks []uint64
	var xs []*extentBlock
	for blk := in.ExtBlk; blk != 0; {
		if len(blks) > int(tx.s.sb.Blocks) {
			return nil, nil, fmt.Errorf("%w: inode %d: extent chain loops", ErrCorrupt, in.Ino)
		}
		b, err := tx.read(g, blk)
		if err != nil {
			return nil, nil, err
		}
		x, h, err := decodeExtentBlock(b, blk)
		if err != nil {
			return nil, nil, err
		}
		if h.Owner != in.Ino || h.Gen != in.Gen {
			return nil, nil, fmt.Errorf("%w: extent block %d belongs to inode %d generation %d, not inode %d generation %d", ErrCorrupt, blk, h.Owner, h.Gen, in.Ino, in.Gen)
		}
		blks = append(blks, blk)
		xs = append(xs, x)
		blk = x.Next
	}
	return blks, xs, nil
}

func (tx *Tx) readExtentChain(g *glock, in *inode) ([]Extent, error) {
	_, xs, err := tx.extentChain(g, in)
	if err != nil {
		return nil, err
	}
	var out []Extent
	for _, x := range xs {
		out = append(out, x.Extents...)
	}
	return out, nil
}

// putInode writes in back (and its overflow extent list).
func (tx *Tx) putInode(g *glock, in *inode) error {
	if in.Type == typeFile && in.Layout != layoutInline {
		var old []uint64
		if in.ExtBlk != 0 {
			var err error
			if old, _, err = tx.extentChain(g, &inode{Ino: in.Ino, Gen: in.Gen, ExtBlk: in.ExtBlk}); err != nil {
				return err
			}
		}
		if len(in.Extents) <= inlineExtents {
			in.Layout = layoutExtents
			for _, b := range old {
				tx.free(b, 1)
			}
			in.ExtBlk = 0
		} else {
			in.Layout = layoutOverflow
			need := (len(in.Extents) + extentsPerBlk - 1) / extentsPerBlk
			blks := old
			if len(blks) > need {
				for _, b := range blks[need:] {
					tx.free(b, 1)
				}
				blks = blks[:need]
			}
			if len(blks) < need {
				runs, err := tx.alloc(need - len(blks))
				if err != nil {
					return err
				}
				for _, r := range runs {
					for i := uint64(0); i < uint64(r.count); i++ {
						blks = append(blks, r.start+i)
					}
				}
			}
			for i, blk := range blks {
				lo, hi := i*extentsPerBlk, (i+1)*extentsPerBlk
				if hi > len(in.Extents) {
					hi = len(in.Extents)
				}
				x := &extentBlock{Extents: in.Extents[lo:hi]}
				if i+1 < len(blks) {
					x.Next = blks[i+1]
				}
				if err := tx.write(g, blk, x.encode(blk, in.Ino, in.Gen)); err != nil {
					return err
				}
			}
			in.ExtBlk = blks[0]
		}
	}
	return tx.write(g, in.Ino, in.encode())
}

// extFind returns the disk block of file block fb, or 0 for a hole.
func extFind(exts []Extent, fb uint64) uint64 {
	i := sort.Search(len(exts), func(i int) bool { return exts[i].File+uint64(exts[i].Count) > fb })
	if i < len(exts) && exts[i].File <= fb {
		return exts[i].Disk + (fb - exts[i].File)
	}
	return 0
}

// extUnmap removes the mapping of file blocks [fb, fb+n) and returns the
// disk runs they had.
func extUnmap(exts []Extent, fb, n uint64) ([]Extent, []blockRun) {
	end := fb + n
	var out []Extent
	var freed []blockRun
	for _, x := range exts {
		xe := x.File + uint64(x.Count)
		if xe <= fb || x.File >= end {
			out = append(out, x)
			continue
		}
		if x.File < fb {
			out = append(out, Extent{File: x.File, Disk: x.Disk, Count: uint32(fb - x.File)})
		}
		lo, hi := max(x.File, fb), min(xe, end)
		freed = append(freed, blockRun{x.Disk + (lo - x.File), uint32(hi - lo)})
		if xe > end {
			out = append(out, Extent{File: end, Disk: x.Disk + (end - x.File), Count: uint32(xe - end)})
		}
	}
	return out, freed
}

// extMap maps file blocks [fb, fb+n) to disk blocks [disk, disk+n); the
// range must be unmapped. Neighbouring extents are merged.
func extMap(exts []Extent, fb, disk uint64, n uint32) []Extent {
	i := sort.Search(len(exts), func(i int) bool { return exts[i].File > fb })
	exts = append(exts, Extent{})
	copy(exts[i+1:], exts[i:])
	exts[i] = Extent{File: fb, Disk: disk, Count: n}
	// Merge with the neighbours where both file and disk blocks continue.
	out := exts[:0]
	for _, x := range exts {
		if k := len(out); k > 0 {
			p := &out[k-1]
			if p.File+uint64(p.Count) == x.File && p.Disk+uint64(p.Count) == x.Disk && uint64(p.Count)+uint64(x.Count) < 1<<31 {
				p.Count += x.Count
				continue
			}
		}
		out = append(out, x)
	}
	return out
}

// readData reads file data of in at off into p (p within the size).
func (tx *Tx) readData(in *inode, p []byte, off int64) error {
	if in.Layout == layoutInline {
		copy(p, in.Inline[off:])
		return nil
	}
	if len(tx.pend) > 0 {
		// Blocks this transaction wrote are not on the device yet.
		for len(p) > 0 {
			fb := uint64(off / BlockSize)
			inb := int(off % BlockSize)
			n := min(BlockSize-inb, len(p))
			disk := extFind(in.Extents, fb)
			switch buf := tx.pend[disk]; {
			case disk == 0:
				clear(p[:n])
			case buf != nil:
				copy(p[:n], buf[inb:])
			default:
				blk := make([]byte, BlockSize)
				if err := tx.s.readAt(tx.ctx, blk, int64(disk)*BlockSize); err != nil {
					return fmt.Errorf("store: reading data of inode %d: %w", in.Ino, err)
				}
				copy(p[:n], blk[inb:])
			}
			p = p[n:]
			off += int64(n)
		}
		return nil
	}
	for len(p) > 0 {
		fb := uint64(off / BlockSize)
		inb := int(off % BlockSize)
		disk := extFind(in.Extents, fb)
		// Read as many contiguous blocks as the extent allows.
		n := BlockSize - inb
		if n > len(p) {
			n = len(p)
		}
		if disk == 0 {
			clear(p[:n])
		} else {
			if disk >= tx.s.sb.Blocks {
				return fmt.Errorf("%w: inode %d maps file block %d to block %d beyond the store", ErrCorrupt, in.Ino, fb, disk)
			}
			// Extend over following blocks of the same extent.
			for n < len(p) && extFind(in.Extents, fb+uint64((inb+n)/BlockSize)) == disk+uint64((inb+n)/BlockSize) && (inb+n)/BlockSize < 256 {
				n += BlockSize
				if n > len(p) {
					n = len(p)
				}
			}
			nb := (inb + n + BlockSize - 1) / BlockSize
			if inb == 0 && n%BlockSize == 0 {
				if err := tx.s.readAt(tx.ctx, p[:n], int64(disk)*BlockSize); err != nil {
					return fmt.Errorf("store: reading data of inode %d: %w", in.Ino, err)
				}
			} else {
				buf := make([]byte, nb*BlockSize)
				if err := tx.s.readAt(tx.ctx, buf, int64(disk)*BlockSize); err != nil {
					return fmt.Errorf("store: reading data of inode %d: %w", in.Ino, err)
				}
				copy(p[:n], buf[inb:])
			}
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}

// readDataBlock reads data block disk into buf (BlockSize), seeing the
// transaction's own unwritten data blocks.
func (tx *Tx) readDataBlock(ino, disk uint64, buf []byte) error {
	if p := tx.pend[disk]; p != nil {
		copy(buf, p)
		return nil
	}
	if disk >= tx.s.sb.Blocks {
		return fmt.Errorf("%w: inode %d maps data to block %d beyond the store", ErrCorrupt, ino, disk)
	}
	if err := tx.s.readAt(tx.ctx, buf, int64(disk)*BlockSize); err != nil {
		return fmt.Errorf("store: reading data of inode %d: %w", ino, err)
	}
	return nil
}
