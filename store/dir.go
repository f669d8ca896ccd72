package store

import (
	"fmt"
	"sort"
)

// A directory's entries are hashed into dirBuckets buckets by name; the
// inode holds the first leaf block of each bucket and leaves of a bucket
// are chained. A lookup reads one chain: at 100,000 entries about four
// leaves.

// leafOf reads and checks leaf blk of directory dir.
func (tx *Tx) leafOf(g *glock, dir *inode, blk uint64) (*dirLeaf, error) {
	if blk >= tx.s.sb.Blocks {
		return nil, fmt.Errorf("%w: directory %d points to leaf %d beyond the store", ErrCorrupt, dir.Ino, blk)
	}
	b, err := tx.read(g, blk)
	if err != nil {
		return nil, err
	}
	l, h, err := decodeDirLeaf(b, blk)
	if err != nil {
		return nil, err
	}
	if h.Owner != dir.Ino || h.Gen != dir.Gen {
		return nil, fmt.Errorf("%w: leaf %d belongs to inode %d generation %d, not directory %d generation %d", ErrCorrupt, blk, h.Owner, h.Gen, dir.Ino, dir.Gen)
	}
	return l, nil
}

// lookup finds name in dir (held by the transaction).
func (tx *Tx) lookup(g *glock, dir *inode, name string) (dirEntry, bool, error) {
	n := 0
	for blk := dir.Buckets[bucketOf(name)]; blk != 0; n++ {
		if n > int(tx.s.sb.Blocks) {
			return dirEntry{}, false, fmt.Errorf("%w: directory %d: bucket chain loops", ErrCorrupt, dir.Ino)
		}
		l, err := tx.leafOf(g, dir, blk)
		if err != nil {
			return dirEntry{}, false, err
		}
		for _, e := range l.Entries {
			if e.Name == name {
				return e, true, nil
			}
		}
		blk = l.Next
	}
	return dirEntry{}, false, nil
}

// addEntry adds de to dir (held EX; de.Name not in it). The caller writes
// the directory inode back.
func (tx *Tx) addEntry(g *glock, dir *inode, de dirEntry) error {
	b := bucketOf(de.Name)
	for blk := dir.Buckets[b]; blk != 0; {
		l, err := tx.leafOf(g, dir, blk)
		if err != nil {
			return err
		}
		if l.used()+de.size() <= BlockSize {
			l.Entries = append(l.Entries, de)
			dir.Entries++
			return tx.write(g, blk, l.encode(blk, dir.Ino, dir.Gen))
		}
		blk = l.Next
	}
	blk, err := tx.allocOne()
	if err != nil {
		return err
	}
	l := &dirLeaf{Next: dir.Buckets[b], Entries: []dirEntry{de}}
	dir.Buckets[b] = blk
	dir.Entries++
	return tx.write(g, blk, l.encode(blk, dir.Ino, dir.Gen))
}

// removeEntry removes name from dir (held EX). An emptied leaf is
// unlinked and freed. The caller writes the directory inode back.
func (tx *Tx) removeEntry(g *glock, dir *inode, name string) error {
	b := bucketOf(name)
	prev := uint64(0)
	var prevLeaf *dirLeaf
	for blk := dir.Buckets[b]; blk != 0; {
		l, err := tx.leafOf(g, dir, blk)
		if err != nil {
			return err
		}
		for i, e := range l.Entries {
			if e.Name != name {
				continue
			}
			l.Entries = append(l.Entries[:i], l.Entries[i+1:]...)
			dir.Entries--
			if len(l.Entries) > 0 {
				return tx.write(g, blk, l.encode(blk, dir.Ino, dir.Gen))
			}
			if prev == 0 {
				dir.Buckets[b] = l.Next
			} else {
				prevLeaf.Next = l.Next
				if err := tx.write(g, prev, prevLeaf.encode(prev, dir.Ino, dir.Gen)); err != nil {
					return err
				}
			}
			tx.free(blk, 1)
			g.uncache(blk)
			return nil
		}
		prev, prevLeaf = blk, l
		blk = l.Next
	}
	return fmt.Errorf("%w: directory %d has no entry %q to remove", ErrCorrupt, dir.Ino, name)
}

// listDir returns the entries of dir sorted by name.
func (tx *Tx) listDir(g *glock, dir *inode) ([]dirEntry, error) {
	var out []dirEntry
	for _, first := range dir.Buckets {
		n := 0
		for blk := first; blk != 0; n++ {
			if n > int(tx.s.sb.Blocks) {
				return nil, fmt.Errorf("%w: directory %d: bucket chain loops", ErrCorrupt, dir.Ino)
			}
			l, err := tx.leafOf(g, dir, blk)
			if err != nil {
				return nil, err
			}
			out = append(out, l.Entries...)
			blk = l.Next
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// freeDir frees the leaves of an empty directory being removed.
func (tx *Tx) freeDirLeaves(g *glock, dir *inode) error {
	for _, first := range dir.Buckets {
		for blk := first; blk != 0; {
			l, err := tx.leafOf(g, dir, blk)
			if err != nil {
				return err
			}
			tx.free(blk, 1)
			g.uncache(blk)
			blk = l.Next
		}
	}
	return nil
}
