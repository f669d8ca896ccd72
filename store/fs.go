package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"
)

// The Store is an io/fs file system: fs.FS, fs.StatFS, fs.ReadDirFS and
// fs.ReadFileFS, so http.FS and testing/fstest.TestFS work on it.
var (
	_ fs.FS         = (*Store)(nil)
	_ fs.StatFS     = (*Store)(nil)
	_ fs.ReadDirFS  = (*Store)(nil)
	_ fs.ReadFileFS = (*Store)(nil)
)

// fileInfo is a snapshot of an inode.
type fileInfo struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
	ino   uint64
	gen   uint32
}

func newFileInfo(name string, in *inode) *fileInfo {
	m := fs.FileMode(in.Mode) & fs.ModePerm
	if in.Type == typeDir {
		m |= fs.ModeDir
	}
	size := in.Size
	if in.Type == typeDir {
		size = 0
	}
	return &fileInfo{name: name, size: size, mode: m, mtime: time.Unix(0, in.Mtime), ino: in.Ino, gen: in.Gen}
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.mtime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }

// Sys returns the FileStat of the inode.
func (fi *fileInfo) Sys() any { return FileStat{Ino: fi.ino, Gen: fi.gen} }

// FileStat is what FileInfo.Sys returns: the inode number and generation.
type FileStat struct {
	Ino uint64
	Gen uint32
}

func baseName(name string) string {
	if name == "." {
		return "."
	}
	return path.Base(name)
}

// statKeep is how long a Stat that had to take locks keeps them Shared
// (glock.keepShared): the next Stats of names beside it are answered
// from this node's caches meanwhile, even while another node keeps
// changing their directory.
const statKeep = 20 * time.Millisecond

// Stat describes name. Errors in a *fs.PathError: fs.ErrNotExist,
// fs.ErrInvalid, ErrCorrupt naming the damaged block.
func (s *Store) Stat(name string) (fs.FileInfo, error) {
	if fi := s.quickStat(name, false); fi != nil {
		return fi, nil
	}
	var fi fs.FileInfo
	err := s.View(context.Background(), func(tx *Tx) error {
		tx.keepShared = statKeep
		in, _, err := tx.resolve(name, Shared)
		if err != nil {
			return err
		}
		fi = newFileInfo(baseName(name), in)
		return nil
	})
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return fi, nil
}

// ReadFile reads the whole of file name under its PR lock: the contents
// as last committed by any node.
func (s *Store) ReadFile(name string) ([]byte, error) {
	var data []byte
	err := s.View(context.Background(), func(tx *Tx) error {
		var err error
		data, err = tx.ReadFile(name)
		return err
	})
	if err != nil {
		return nil, pathErr("read", name, err)
	}
	return data, nil
}

// dirEntryInfo is an fs.DirEntry; Info reads the inode from the cache of
// its lock when this node holds it, else as it is on the device at that
// moment (no lock is taken: a listing with stat of a directory that
// another node keeps changing does not ping-pong every file's lock). The
// device has what other nodes committed up to their last checkpoint: a
// change a node made to the inode after it is seen once that node hands
// the inode's lock on or checkpoints (within its
// Config.CheckpointInterval), much as an NFS client sees attributes
// within its attribute cache time. The entries themselves are read under
// the directory's lock: current.
type dirEntryInfo struct {
	s  *Store
	de dirEntry
}

func (d *dirEntryInfo) Name() string { return d.de.Name }
func (d *dirEntryInfo) IsDir() bool  { return d.de.Type == typeDir }
func (d *dirEntryInfo) Type() fs.FileMode {
	if d.de.Type == typeDir {
		return fs.ModeDir
	}
	return 0
}
func (d *dirEntryInfo) String() string { return fs.FormatDirEntry(d) }

func (d *dirEntryInfo) Info() (fs.FileInfo, error) {
	var lastErr error
	for try := 0; try < 3; try++ {
		var b []byte
		var err error
		if try == 0 {
			// From the cache of the inode's lock when this node holds it
			// (it is then what the device holds, or newer).
			b, err = d.s.quickBlock(context.Background(), d.de.Ino, d.de.Ino)
		} else {
			b, err = d.s.readBlock(context.Background(), d.de.Ino)
		}
		if err != nil {
			return nil, err
		}
		in, err := decodeInode(b, d.de.Ino)
		if err == nil && in.Gen == d.de.Gen && in.Nlink > 0 {
			return newFileInfo(d.de.Name, in), nil
		}
		if err == nil {
			// Removed or replaced since the listing.
			return nil, &fs.PathError{Op: "stat", Path: d.de.Name, Err: fs.ErrNotExist}
		}
		lastErr = err // torn by a concurrent write in place: read again
	}
	return nil, &fs.PathError{Op: "stat", Path: d.de.Name, Err: lastErr}
}

// ReadDir lists directory name sorted by file name.
func (s *Store) ReadDir(name string) ([]fs.DirEntry, error) {
	var ents []dirEntry
	err := s.View(context.Background(), func(tx *Tx) error {
		in, g, err := tx.resolve(name, Shared)
		if err != nil {
			return err
		}
		if in.Type != typeDir {
			return ErrNotDir
		}
		ents, err = tx.listDir(g, in)
		return err
	})
	if err != nil {
		return nil, pathErr("readdir", name, err)
	}
	out := make([]fs.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = &dirEntryInfo{s, e}
	}
	return out, nil
}

// Open opens name for reading (fs.FS). The File reads the contents as last
// committed by any node at each read (close-to-open and stronger).
func (s *Store) Open(name string) (fs.File, error) {
	f, err := s.OpenFile(name, 0, 0)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// FSStats is the store's usage (StatFS).
type FSStats struct {
	// BlockSize is the block size in bytes.
	BlockSize int
	// Blocks is the number of blocks in the allocation groups.
	Blocks uint64
	// Free is the number of free blocks.
	Free uint64
	// Groups is the number of allocation groups.
	Groups int
	// Slots is the number of node slots (journals).
	Slots int
}

// StatFS reports the store's usage, from the allocation group headers as
// they are on the device (no locks: a snapshot).
func (s *Store) StatFS() (FSStats, error) {
	st := FSStats{BlockSize: BlockSize, Groups: int(s.sb.AGCount), Slots: int(s.sb.Slots)}
	for ag := 0; ag < int(s.sb.AGCount); ag++ {
		start, n := s.sb.agRange(ag)
		b, err := s.readBlock(context.Background(), start)
		if err != nil {
			return st, err
		}
		h, err := decodeAGHeader(b, start)
		if err != nil {
			return st, fmt.Errorf("allocation group %d: %w", ag, err)
		}
		st.Blocks += uint64(n)
		st.Free += uint64(h.Free)
	}
	return st, nil
}

// WriteFile replaces (or creates with perm) file name with data in one
// transaction: durable when it returns; readers on every node see the old
// contents or the new, never a mix.
func (s *Store) WriteFile(name string, data []byte, perm fs.FileMode) error {
	err := s.run(context.Background(), false, func(tx *Tx) error { return tx.writeFile(name, data, perm) })
	return pathErr("write", name, err)
}

var errNotOpen = errors.New("file not open for writing")

// quickStat looks name up in this node's lock caches alone: each block on
// the way must be cached under a grant this node holds (which no other
// node can have changed since: a change takes the lock from it). It
// answers only when every block on the way is so cached, checks out and
// the name is found; anything else (a lock not held, a missing name) goes
// the locked way. The device is never read here: it may lag what another
// node committed until that node checkpoints (deferInPlace). A block whose
// lock a local transaction holds exclusively is waited for when wait,
// else the answer is left to the locked way.
func (s *Store) quickStat(name string, wait bool) fs.FileInfo {
	if s.closed.Load() {
		return nil
	}
	if fi := s.statMemo.lookup(s, name); fi != nil {
		return fi
	}
	parts, err := splitPath(name)
	if err != nil {
		return nil
	}
	// The images read from this node's lock caches, to remember the
	// answer by (statMemo).
	var walk []cachedImage
	// Only what the walk needs is read of each directory's inode and
	// leaves (peekDir, leafFind): decoding them whole made a stat cost
	// as much as decoding 256 buckets twice and every name of a leaf.
	ino, want := s.sb.Root, dirEntry{Type: typeDir}
	for i, p := range parts {
		if want.Type != typeDir || ino < s.sb.AGStart || ino >= s.sb.Blocks {
			return nil
		}
		b := s.walkBlock(ino, ino, wait, &walk)
		if b == nil {
			return nil
		}
		gen, blk, ok := peekDir(b, ino, bucketOf(p))
		if !ok || (i > 0 && gen != want.Gen) {
			return nil
		}
		found := false
		for n := 0; blk != 0 && !found; n++ {
			if n > 64 || blk >= s.sb.Blocks {
				return nil
			}
			lb := s.walkBlock(ino, blk, wait, &walk)
			if lb == nil {
				return nil
			}
			var de dirEntry
			de, found, blk, ok = leafFind(lb, blk, ino, gen, p)
			if !ok {
				return nil
			}
			if found {
				want = de
			}
		}
		if !found {
			return nil
		}
		ino = want.Ino
	}
	if ino < s.sb.AGStart || ino >= s.sb.Blocks {
		return nil
	}
	b := s.walkBlock(ino, ino, wait, &walk)
	if b == nil {
		return nil
	}
	in, err := decodeInode(b, ino)
	if err != nil || in.Nlink == 0 || (len(parts) > 0 && (in.Gen != want.Gen || in.Type != want.Type)) {
		return nil
	}
	fi := newFileInfo(baseName(name), in)
	s.statMemo.remember(name, walk, fi)
	return fi
}

// peekDir reads of inode block b (inode ino) what a lookup needs: that it
// is a live directory, its generation, and the first leaf of bucket.
func peekDir(b []byte, ino uint64, bucket int) (gen uint32, leaf uint64, ok bool) {
	h, err := openBlock(b, ino, KindInode)
	if err != nil || h.Owner != ino || bucket < 0 || bucket >= dirBuckets {
		return 0, 0, false
	}
	d := dec{b: b, off: headerSize}
	typ := d.u8()
	d.u8()
	d.u16()
	d.u32()
	nlink := d.u32()
	if d.err != nil || typ != typeDir || nlink == 0 {
		return 0, 0, false
	}
	d.off = inodeFixed + 8*bucket
	leaf = d.u64()
	return h.Gen, leaf, d.err == nil
}

// leafFind looks name up in directory leaf b (block blk of directory
// owner, generation gen) without decoding the other entries: the entry
// if found, and the chain's next leaf; !ok when the block does not check
// out as such a leaf.
func leafFind(b []byte, blk, owner uint64, gen uint32, name string) (de dirEntry, found bool, next uint64, ok bool) {
	h, err := openBlock(b, blk, KindDirLeaf)
	if err != nil || h.Owner != owner || h.Gen != gen {
		return de, false, 0, false
	}
	d := dec{b: b, off: headerSize}
	next = d.u64()
	n := int(d.u32())
	d.u32()
	if n > BlockSize/14 {
		return de, false, 0, false
	}
	for i := 0; i < n && d.err == nil; i++ {
		e := dirEntry{Ino: d.u64(), Gen: d.u32(), Type: d.u8()}
		nl := int(d.u8())
		if !d.need(nl) {
			break
		}
		nb := d.b[d.off : d.off+nl] // compared in place, not copied
		d.off += nl
		if string(nb) == name {
			e.Name = name
			return e, true, next, true
		}
	}
	return de, false, next, d.err == nil
}

// quickBlock is block blk of inode ino from the cache of ino's lock when
// this node holds it, else from the device.
func (s *Store) quickBlock(ctx context.Context, ino, blk uint64) ([]byte, error) {
	if b := s.cachedBlock(ino, blk, false); b != nil {
		return b, nil
	}
	return s.readBlock(ctx, blk)
}
