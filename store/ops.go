package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"
)

// More path errors, beside the io/fs ones.
var (
	// ErrNotEmpty: a directory to remove (or to rename over) has entries.
	// Not retriable until they are gone.
	ErrNotEmpty = errors.New("directory not empty")
	// ErrIsDir: a file operation on a directory. Not retriable.
	ErrIsDir = errors.New("is a directory")
	// ErrNotDir: a directory operation on a file, or a path through a
	// file. It wraps fs.ErrNotExist for lookups. Not retriable.
	ErrNotDir = errors.New("not a directory")
)

func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// splitPath checks name (an io/fs path: slash-separated, no . or ..
// elements, no leading slash; "." is the root) and returns its elements.
func splitPath(name string) ([]string, error) {
	if !fs.ValidPath(name) {
		return nil, fs.ErrInvalid
	}
	if name == "." {
		return nil, nil
	}
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if len(p) > MaxNameLen {
			return nil, fmt.Errorf("%w: element of %d bytes (max %d)", ErrTooLarge, len(p), MaxNameLen)
		}
	}
	return parts, nil
}

// child follows entry de of a directory to its inode, held in mode.
func (tx *Tx) child(de dirEntry, mode LockMode) (*inode, *glock, error) {
	in, g, err := tx.getInode(de.Ino, mode)
	if err != nil {
		return nil, nil, err
	}
	if in.Gen != de.Gen || in.Type != de.Type || in.Nlink == 0 {
		return nil, nil, fmt.Errorf("%w: entry %q points to inode %d generation %d, found generation %d type %d links %d",
			ErrCorrupt, de.Name, de.Ino, de.Gen, in.Gen, in.Type, in.Nlink)
	}
	return in, g, nil
}

// walk follows parts from the root, every directory on the way held PR
// and the last one in mode.
func (tx *Tx) walk(parts []string, mode LockMode) (*inode, *glock, error) {
	return tx.walkTo(parts, func(uint64) LockMode { return mode })
}

// walkTo is walk with the last inode's mode chosen by last, from its
// inode number.
func (tx *Tx) walkTo(parts []string, last func(ino uint64) LockMode) (*inode, *glock, error) {
	m := Shared
	if len(parts) == 0 {
		m = last(tx.s.sb.Root)
	}
	cur, g, err := tx.getInode(tx.s.sb.Root, m)
	if err != nil {
		return nil, nil, err
	}
	for i, p := range parts {
		if cur.Type != typeDir {
			return nil, nil, fmt.Errorf("%w (%w)", fs.ErrNotExist, ErrNotDir)
		}
		de, ok, err := tx.lookup(g, cur, p)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return nil, nil, fs.ErrNotExist
		}
		m := Shared
		if i == len(parts)-1 {
			m = last(de.Ino)
		}
		if cur, g, err = tx.child(de, m); err != nil {
			return nil, nil, err
		}
	}
	return cur, g, nil
}

// resolve returns the inode name names, held in mode.
func (tx *Tx) resolve(name string, mode LockMode) (*inode, *glock, error) {
	parts, err := splitPath(name)
	if err != nil {
		return nil, nil, err
	}
	return tx.walk(parts, mode)
}

// resolveParent returns the directory that holds name's last element,
// held in mode, and that element. The root has no parent (fs.ErrInvalid).
func (tx *Tx) resolveParent(name string, mode LockMode) (*inode, *glock, string, error) {
	return tx.resolveParentTo(name, func(uint64) LockMode { return mode })
}

// resolveParentTo is resolveParent with the directory's mode chosen by
// mode, from its inode number.
func (tx *Tx) resolveParentTo(name string, mode func(ino uint64) LockMode) (*inode, *glock, string, error) {
	parts, err := splitPath(name)
	if err != nil {
		return nil, nil, "", err
	}
	if len(parts) == 0 {
		return nil, nil, "", fs.ErrInvalid
	}
	dir, g, err := tx.walkTo(parts[:len(parts)-1], mode)
	if err != nil {
		return nil, nil, "", err
	}
	if dir.Type != typeDir {
		return nil, nil, "", fmt.Errorf("%w (%w)", fs.ErrNotExist, ErrNotDir)
	}
	return dir, g, parts[len(parts)-1], nil
}

func (s *Store) now() int64 { return s.clk.Now().UnixNano() }

// newInode allocates and locks a new inode of typ under directory parent.
func (tx *Tx) newInode(typ uint8, perm fs.FileMode, parent uint64) (*inode, *glock, error) {
	return tx.newInodeAt(typ, perm, parent, false)
}

// newInodeAt is newInode; with apart the inode takes the first block of
// a wholly free region (allocApart).
func (tx *Tx) newInodeAt(typ uint8, perm fs.FileMode, parent uint64, apart bool) (*inode, *glock, error) {
	// Where this node allocates (alloc), directories too: the node that
	// makes a directory usually works in it, and every change in it
	// rewrites the directory's inode in place; an inode in a group
	// another node writes would put that block's region under both
	// nodes' writes (its mirror locks going back and forth).
	alloc := tx.allocInode
	if apart {
		alloc = tx.allocApart
	}
	blk, err := alloc()
	if err != nil {
		return nil, nil, err
	}
	tx.lastNewInode = blk
	gen, err := tx.newGen(blk)
	if err != nil {
		return nil, nil, err
	}
	g := tx.s.glockFor(classInode, blk)
	if err := tx.lock(g, Exclusive); err != nil {
		return nil, nil, err
	}
	now := tx.s.now()
	in := &inode{Ino: blk, Gen: gen, Type: typ, Mode: uint32(perm & fs.ModePerm), Nlink: 1, Mtime: now, Ctime: now, Parent: parent}
	if typ == typeDir {
		in.Buckets = make([]uint64, dirBuckets)
	}
	return in, g, nil
}

// dropInode frees an inode that lost its last name: its data or leaves,
// and the inode block, which is left as a tombstone (no links).
func (tx *Tx) dropInode(g *glock, in *inode) error {
	if in.Type == typeDir {
		if err := tx.freeDirLeaves(g, in); err != nil {
			return err
		}
		in.Buckets = make([]uint64, dirBuckets)
	} else {
		if err := tx.truncateData(g, in, 0); err != nil {
			return err
		}
	}
	in.Nlink = 0
	in.Entries = 0
	if err := tx.putInode(g, in); err != nil {
		return err
	}
	tx.free(in.Ino, 1)
	return nil
}

// truncateData cuts in's data to size (not larger than in.Size), freeing
// whole blocks past it and zeroing the tail of the last one.
func (tx *Tx) truncateData(g *glock, in *inode, size int64) error {
	if in.Layout == layoutInline {
		in.Inline = in.Inline[:size]
		in.Size = size
		return nil
	}
	keep := uint64((size + BlockSize - 1) / BlockSize)
	var freed []blockRun
	in.Extents, freed = extUnmap(in.Extents, keep, 1<<62)
	for _, r := range freed {
		tx.free(r.start, r.count)
	}
	if size%BlockSize != 0 {
		// Copy the last block with its tail zeroed: bytes past the size
		// read as zero when the file grows again.
		fb := uint64(size / BlockSize)
		if old := extFind(in.Extents, fb); old != 0 {
			buf := make([]byte, BlockSize)
			if err := tx.readDataBlock(in.Ino, old, buf); err != nil {
				return err
			}
			clear(buf[size%BlockSize:])
			if err := tx.setBlocks(in, fb, buf); err != nil {
				return err
			}
		}
	}
	in.Size = size
	if size == 0 {
		if in.ExtBlk != 0 {
			in.Layout = layoutOverflow // putInode frees the chain
		}
		in.Extents = nil
		if err := tx.putInode(g, in); err != nil {
			return err
		}
		in.Layout, in.Inline = layoutInline, nil
	}
	return nil
}

// setBlocks writes data (a whole number of blocks) as file blocks fb,
// fb+1, ... of in, to newly allocated blocks (copy on write: a crash
// leaves the old contents or the new, never a mix), freeing the blocks
// they replace. data is written as it is, not copied: the caller leaves
// it alone from here on.
func (tx *Tx) setBlocks(in *inode, fb uint64, data []byte) error {
	runs, err := tx.alloc(len(data) / BlockSize)
	if err != nil {
		return err
	}
	i := 0
	for _, r := range runs {
		buf := data[i*BlockSize : (i+int(r.count))*BlockSize]
		var freed []blockRun
		in.Extents, freed = extUnmap(in.Extents, fb+uint64(i), uint64(r.count))
		for _, f := range freed {
			tx.free(f.start, f.count)
		}
		in.Extents = extMap(in.Extents, fb+uint64(i), r.start, r.count)
		tx.data = append(tx.data, dataWrite{r.start, buf})
		for k := uint32(0); k < r.count; k++ {
			tx.pend[r.start+uint64(k)] = buf[int(k)*BlockSize : int(k+1)*BlockSize]
		}
		i += int(r.count)
	}
	return nil
}

// setContent replaces the whole data of file in with data.
func (tx *Tx) setContent(g *glock, in *inode, data []byte) error {
	if err := tx.truncateData(g, in, 0); err != nil {
		return err
	}
	if len(data) <= maxInlineData {
		in.Layout, in.Inline, in.Size = layoutInline, append([]byte(nil), data...), int64(len(data))
		return nil
	}
	in.Layout, in.Inline = layoutExtents, nil
	n := (len(data) + BlockSize - 1) / BlockSize
	buf := make([]byte, n*BlockSize)
	copy(buf, data)
	in.Size = int64(len(data))
	return tx.setBlocks(in, 0, buf)
}

// Mkdir creates directory name with permission bits perm. Errors (in a
// *fs.PathError): fs.ErrExist, fs.ErrNotExist for a missing parent,
// ErrNoSpace, fs.ErrInvalid for a bad name.
func (s *Store) Mkdir(name string, perm fs.FileMode) error {
	return pathErr("mkdir", name, s.run(context.Background(), false, func(tx *Tx) error {
		return tx.mkdir(name, perm)
	}))
}

// MkdirApart creates directory name as Mkdir does, with its inode in a
// region of the volume of its own: the first block of a wholly free,
// aligned run of 256 blocks (1 MiB, the mirror's region under the default
// FormatOptions.Align). Every entry made or removed in a directory
// rewrites its inode; for a directory every node changes (the web tier's
// session and key shards), inodes side by side would put all those
// changes under one mirror region and its checksum-area lock, which would
// then go from node to node at each of them. The rest of the run stays
// free for later allocations, which reach it last (allocApart). Errors as
// Mkdir; ErrNoSpace when no such run is left.
func (s *Store) MkdirApart(name string, perm fs.FileMode) error {
	return pathErr("mkdir", name, s.run(context.Background(), false, func(tx *Tx) error {
		return tx.mkdirAt(name, perm, true)
	}))
}

func (tx *Tx) mkdir(name string, perm fs.FileMode) error { return tx.mkdirAt(name, perm, false) }

func (tx *Tx) mkdirAt(name string, perm fs.FileMode, apart bool) error {
	dir, g, last, err := tx.resolveParent(name, Exclusive)
	if err != nil {
		if errors.Is(err, fs.ErrInvalid) && name == "." {
			return fs.ErrExist
		}
		return err
	}
	if _, ok, err := tx.lookup(g, dir, last); err != nil {
		return err
	} else if ok {
		return fs.ErrExist
	}
	in, ig, err := tx.newInodeAt(typeDir, perm, dir.Ino, apart)
	if err != nil {
		return err
	}
	if err := tx.addEntry(g, dir, dirEntry{Name: last, Ino: in.Ino, Gen: in.Gen, Type: typeDir}); err != nil {
		return err
	}
	dir.Mtime = tx.s.now()
	if err := tx.putInode(g, dir); err != nil {
		return err
	}
	return tx.putInode(ig, in)
}

// MkdirAll creates name and any missing parents, as os.MkdirAll; an
// existing directory is no error, an existing file is ErrNotDir.
func (s *Store) MkdirAll(name string, perm fs.FileMode) error {
	parts, err := splitPath(name)
	if err != nil {
		return pathErr("mkdir", name, err)
	}
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := s.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return pathErr("mkdir", p, ErrNotDir)
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := s.Mkdir(p, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// Remove removes file or empty directory name. Errors: fs.ErrNotExist,
// ErrNotEmpty, fs.ErrInvalid for the root. An open File of a removed file
// fails with fs.ErrNotExist from then on.
func (s *Store) Remove(name string) error {
	return pathErr("remove", name, s.run(context.Background(), false, func(tx *Tx) error {
		return tx.remove(name)
	}))
}

func (tx *Tx) remove(name string) error {
	dir, g, last, err := tx.resolveParent(name, Exclusive)
	if err != nil {
		return err
	}
	de, ok, err := tx.lookup(g, dir, last)
	if err != nil {
		return err
	}
	if !ok {
		return fs.ErrNotExist
	}
	in, ig, err := tx.child(de, Exclusive)
	if err != nil {
		return err
	}
	if in.Type == typeDir && in.Entries > 0 {
		return ErrNotEmpty
	}
	if err := tx.removeEntry(g, dir, last); err != nil {
		return err
	}
	dir.Mtime = tx.s.now()
	if err := tx.putInode(g, dir); err != nil {
		return err
	}
	return tx.dropInode(ig, in)
}

// RemoveAll removes name and everything under it, as os.RemoveAll: a
// missing name is no error. Each removal is its own transaction, so a
// crash part way leaves a smaller tree, never a broken one.
func (s *Store) RemoveAll(name string) error {
	if name == "." {
		ents, err := s.ReadDir(".")
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := s.RemoveAll(e.Name()); err != nil {
				return err
			}
		}
		return nil
	}
	fi, err := s.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		ents, err := s.ReadDir(name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, e := range ents {
			if err := s.RemoveAll(path.Join(name, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := s.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Rename moves oldname to newname atomically, also across directories. An
// existing newname is replaced in the same transaction (a file by a file,
// an empty directory by a directory): readers see the old one or the new
// one, never neither. Errors: fs.ErrNotExist, ErrIsDir / ErrNotDir for
// mismatched kinds, ErrNotEmpty, fs.ErrInvalid for moving a directory
// under itself or renaming the root.
func (s *Store) Rename(oldname, newname string) error {
	err := s.run(context.Background(), false, func(tx *Tx) error { return tx.rename(oldname, newname) })
	if err != nil {
		return &fs.PathError{Op: "rename", Path: oldname + " -> " + newname, Err: unwrapPath(err)}
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (tx *Tx) rename(oldname, newname string) error {
	sp, sg, sname, err := tx.resolveParent(oldname, Exclusive)
	if err != nil {
		return err
	}
	de, ok, err := tx.lookup(sg, sp, sname)
	if err != nil {
		return err
	}
	if !ok {
		return fs.ErrNotExist
	}
	dp, dg, dname, err := tx.resolveParent(newname, Exclusive)
	if err != nil {
		return err
	}
	if dp.Ino == sp.Ino {
		dp = sp
	}
	if dp == sp && dname == sname {
		return nil
	}
	src, srcg, err := tx.child(de, Exclusive)
	if err != nil {
		return err
	}
	if src.Type == typeDir && dp != sp {
		// A directory may not move under itself.
		for a := dp; ; {
			if a.Ino == src.Ino {
				return fmt.Errorf("%w: %s is inside %s", fs.ErrInvalid, newname, oldname)
			}
			if a.Ino == tx.s.sb.Root {
				break
			}
			if a, _, err = tx.getInode(a.Parent, Shared); err != nil {
				return err
			}
		}
	}
	old, exists, err := tx.lookup(dg, dp, dname)
	if err != nil {
		return err
	}
	if exists {
		if old.Ino == src.Ino {
			return nil
		}
		dst, dstg, err := tx.child(old, Exclusive)
		if err != nil {
			return err
		}
		switch {
		case dst.Type == typeDir && src.Type != typeDir:
			return ErrIsDir
		case dst.Type != typeDir && src.Type == typeDir:
			return ErrNotDir
		case dst.Type == typeDir && dst.Entries > 0:
			return ErrNotEmpty
		}
		if err := tx.removeEntry(dg, dp, dname); err != nil {
			return err
		}
		if err := tx.dropInode(dstg, dst); err != nil {
			return err
		}
	}
	if err := tx.removeEntry(sg, sp, sname); err != nil {
		return err
	}
	if err := tx.addEntry(dg, dp, dirEntry{Name: dname, Ino: src.Ino, Gen: src.Gen, Type: src.Type}); err != nil {
		return err
	}
	now := tx.s.now()
	sp.Mtime, dp.Mtime, src.Ctime = now, now, now
	if src.Type == typeDir {
		src.Parent = dp.Ino
	}
	if err := tx.putInode(sg, sp); err != nil {
		return err
	}
	if dp != sp {
		if err := tx.putInode(dg, dp); err != nil {
			return err
		}
	}
	return tx.putInode(srcg, src)
}

// Chmod sets the permission bits of name (mode & fs.ModePerm).
func (s *Store) Chmod(name string, mode fs.FileMode) error {
	return pathErr("chmod", name, s.run(context.Background(), false, func(tx *Tx) error {
		in, g, err := tx.resolve(name, Exclusive)
		if err != nil {
			return err
		}
		in.Mode = uint32(mode & fs.ModePerm)
		in.Ctime = tx.s.now()
		return tx.putInode(g, in)
	}))
}

// Chtimes sets the modification time of name (the store keeps no access
// time; atime is accepted for os.Chtimes compatibility and ignored).
func (s *Store) Chtimes(name string, atime, mtime time.Time) error {
	return pathErr("chtimes", name, s.run(context.Background(), false, func(tx *Tx) error {
		in, g, err := tx.resolve(name, Exclusive)
		if err != nil {
			return err
		}
		in.Mtime = mtime.UnixNano()
		in.Ctime = tx.s.now()
		return tx.putInode(g, in)
	}))
}

// ReadFile returns the contents of file name as of the transaction.
func (tx *Tx) ReadFile(name string) ([]byte, error) {
	return tx.readFile(name, Shared, Shared)
}

// ReadFileForUpdate is ReadFile for a transaction that goes on to rewrite
// name: it takes the locks that WriteFile of an existing name takes (its
// directory PR, the file EX) instead of PR on the file. Read PR, the
// file's lock would have to become EX when the write comes, and a lock
// converted up while the transaction holds others is taken anew in lock
// order: the transaction starts over. The directory stays PR, so nodes
// rewriting different files of one directory never take its lock from
// each other. A missing file is fs.ErrNotExist with its directory held
// PR: a WriteFile that creates it then takes the directory EX, and the
// transaction starts over once (ReadFileForCreate avoids that when the
// file is expected to be new).
func (tx *Tx) ReadFileForUpdate(name string) ([]byte, error) {
	return tx.readFile(name, Shared, Exclusive)
}

// ReadFileForCreate is ReadFile for a transaction that goes on to create
// name when it is missing, or to rewrite or remove it: its directory is
// taken EX (the lock a create or a remove needs) and the file EX. A
// missing file is fs.ErrNotExist with the directory held EX; the
// WriteFile that creates it then needs no other lock but the new inode's.
// The directory's EX excludes every other node's use of the directory
// until the transaction ends: prefer ReadFileForUpdate for files that
// usually exist.
func (tx *Tx) ReadFileForCreate(name string) ([]byte, error) {
	return tx.readFile(name, Exclusive, Exclusive)
}

// readFile reads name with its directory held in dirMode and the file in
// mode (both Shared: a plain read).
func (tx *Tx) readFile(name string, dirMode, mode LockMode) ([]byte, error) {
	var in *inode
	var err error
	if dirMode == Shared && mode == Shared {
		in, _, err = tx.resolve(name, Shared)
	} else {
		var dir *inode
		var g *glock
		var last string
		if dir, g, last, err = tx.resolveParent(name, dirMode); err == nil {
			var de dirEntry
			var ok bool
			de, ok, err = tx.lookup(g, dir, last)
			switch {
			case err != nil:
			case !ok:
				err = fs.ErrNotExist
			default:
				in, _, err = tx.child(de, mode)
			}
		}
	}
	if err != nil {
		return nil, pathErr("read", name, err)
	}
	if in.Type == typeDir {
		return nil, pathErr("read", name, ErrIsDir)
	}
	buf := make([]byte, in.Size)
	if err := tx.readData(in, buf, 0); err != nil {
		return nil, pathErr("read", name, err)
	}
	return buf, nil
}

// WriteFile replaces the contents of file name (creating it with perm if
// missing) with data, as part of the transaction. It takes the file EX and
// its directory EX, as a create needs; but a directory the transaction
// holds already is used in the mode it is held: after ReadFileForUpdate
// of an existing file (directory PR), the rewrite takes no directory lock
// EX (its entries do not change), and nodes rewriting different files of
// one directory never take its lock from each other. A create in a
// directory held PR takes it EX anew, and the transaction starts over
// once.
func (tx *Tx) WriteFile(name string, data []byte, perm fs.FileMode) error {
	return pathErr("write", name, tx.writeFile(name, data, perm))
}

// heldOr is the mode to take inode ino's lock in: the one the transaction
// holds it in already, else mode.
func (tx *Tx) heldOr(mode LockMode) func(ino uint64) LockMode {
	return func(ino uint64) LockMode {
		if m, ok := tx.held[tx.s.glockFor(classInode, ino)]; ok {
			return m
		}
		return mode
	}
}

func (tx *Tx) writeFile(name string, data []byte, perm fs.FileMode) error {
	dir, g, last, err := tx.resolveParentTo(name, tx.heldOr(Exclusive))
	if err != nil {
		return err
	}
	de, ok, err := tx.lookup(g, dir, last)
	if err != nil {
		return err
	}
	var in *inode
	var ig *glock
	if ok {
		if in, ig, err = tx.child(de, Exclusive); err != nil {
			return err
		}
		if in.Type == typeDir {
			return ErrIsDir
		}
	} else {
		// A new entry: the directory EX. Held PR so far, it is taken
		// anew and the transaction starts over with it taken first
		// (Tx.lock); its entries are looked up again then.
		if err := tx.lock(g, Exclusive); err != nil {
			return err
		}
		if in, ig, err = tx.newInode(typeFile, perm, dir.Ino); err != nil {
			return err
		}
		if err := tx.addEntry(g, dir, dirEntry{Name: last, Ino: in.Ino, Gen: in.Gen, Type: typeFile}); err != nil {
			return err
		}
		dir.Mtime = tx.s.now()
		if err := tx.putInode(g, dir); err != nil {
			return err
		}
	}
	if err := tx.setContent(ig, in, data); err != nil {
		return err
	}
	in.Mtime = tx.s.now()
	return tx.putInode(ig, in)
}

// ReadFileOf reads the file whose identity is id (FileStat, as
// FileInfo.Sys gives it), holding it EX for a rewrite (WriteFileOf),
// without looking up a path: none of its directories' locks is taken, so
// a node rewriting a file it knows never takes a lock of the directory
// from another node making or removing other files in it. A remove or a
// rename of the file takes it EX too, and waits. fs.ErrNotExist when the
// file was removed (its inode freed, or its block reused: for another
// inode, another generation, or for other metadata or file data);
// ErrIsDir for a directory; ErrCorrupt for an inode block damaged on every
// leg, except one whose first bytes (the block magic) are gone too, which
// cannot be told from file data and reads as removed here (a path lookup
// and the check still report it).
func (tx *Tx) ReadFileOf(id FileStat) ([]byte, error) {
	in, _, err := tx.fileOf(id)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, in.Size)
	if err := tx.readData(in, buf, 0); err != nil {
		return nil, pathErr("read", id.String(), err)
	}
	return buf, nil
}

// WriteFileOf replaces the contents of the file whose identity is id with
// data, holding it EX and none of its directories' locks (ReadFileOf).
// Errors as ReadFileOf.
func (tx *Tx) WriteFileOf(id FileStat, data []byte) error {
	in, g, err := tx.fileOf(id)
	if err != nil {
		return err
	}
	if err := tx.setContent(g, in, data); err != nil {
		return pathErr("write", id.String(), err)
	}
	in.Mtime = tx.s.now()
	return pathErr("write", id.String(), tx.putInode(g, in))
}

// HoldsExclusive reports whether this node keeps an exclusive grant of
// the lock of name's inode (a file's or a directory's) cached, so that a
// transaction taking it EX now would not ask the lock manager: a hint for
// callers grouping their work (a transaction that would wait for the lock
// to come from another node is best kept apart from work that need not),
// which may be wrong the next moment. name's inode is found in this
// node's lock caches (Stat's lock-free way), else through its parent
// directories held PR (which may ask the lock manager for them, never
// for name's own lock, which stays where it is), waiting at most
// Config.OrphanCheck for them and not at all for a dead node's. False when
// name does not exist, when its parents are not had in time, or when this
// node holds no such grant. It may wait for a local transaction holding
// one of the locks on the way exclusively to end.
func (s *Store) HoldsExclusive(name string) bool {
	var ino uint64
	if fi := s.quickStat(name, true); fi != nil {
		st, ok := fi.Sys().(FileStat)
		if !ok {
			return false
		}
		ino = st.Ino
	} else {
		// A hint is not worth a wait: a dead node's lock on the way
		// gives up at once, a live node's after OrphanCheck.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.OrphanCheck)
		defer cancel()
		err := s.runBounded(ctx, false, time.Nanosecond, func(tx *Tx) error {
			dir, g, elem, err := tx.resolveParent(name, Shared)
			if err != nil {
				return err
			}
			de, found, err := tx.lookup(g, dir, elem)
			if err != nil || !found {
				return fs.ErrNotExist
			}
			ino = de.Ino
			return nil
		})
		if err != nil {
			return false
		}
	}
	s.gmu.Lock()
	g := s.glocks[glockKey{classInode, ino}]
	s.gmu.Unlock()
	return g != nil && g.covers(Exclusive)
}

// String names the file of identity id in errors.
func (id FileStat) String() string { return fmt.Sprintf("inode %d generation %d", id.Ino, id.Gen) }

// fileOf locks the file whose identity is id EX and reads its inode.
func (tx *Tx) fileOf(id FileStat) (*inode, *glock, error) {
	s := tx.s
	if id.Ino < s.sb.AGStart || id.Ino >= s.sb.Blocks {
		return nil, nil, pathErr("open", id.String(), fmt.Errorf("%w: no inode %d in the store", fs.ErrNotExist, id.Ino))
	}
	in, g, err := tx.getInodeFor(id.Ino, id.Gen, Exclusive)
	if err != nil {
		return nil, nil, pathErr("open", id.String(), err)
	}
	if in.Type == typeDir {
		return nil, nil, pathErr("open", id.String(), ErrIsDir)
	}
	return in, g, nil
}

// Remove removes file or empty directory name as part of the transaction.
func (tx *Tx) Remove(name string) error { return pathErr("remove", name, tx.remove(name)) }

// Rename renames as Store.Rename, as part of the transaction.
func (tx *Tx) Rename(oldname, newname string) error {
	if err := tx.rename(oldname, newname); err != nil {
		return &fs.PathError{Op: "rename", Path: oldname + " -> " + newname, Err: unwrapPath(err)}
	}
	return nil
}

// Mkdir creates a directory as part of the transaction.
func (tx *Tx) Mkdir(name string, perm fs.FileMode) error {
	return pathErr("mkdir", name, tx.mkdir(name, perm))
}

// Stat describes name as of the transaction.
func (tx *Tx) Stat(name string) (fs.FileInfo, error) {
	in, _, err := tx.resolve(name, Shared)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return newFileInfo(path.Base(name), in), nil
}

// Update runs fn as one transaction of this node's slot: the changes fn
// makes through tx and the records it logs commit together, durably,
// when Update returns nil, or not at all. fn may run more than once: when
// it needs a lock out of lock order that another holder keeps, the
// transaction is abandoned (nothing committed) and fn runs again with
// that lock taken first; fn must therefore have no effects outside tx
// (ErrConflict after 32 attempts). An error from fn abandons the
// transaction and is returned as is.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) error {
	return s.run(ctx, false, fn)
}

// UpdateRecoveryBound is Update whose waits for a lock a dead node holds
// (until its recovery releases it) last at most wait: then it fails with
// ErrRecovering and nothing is committed. A web request retried while the
// node that served it first is being recovered is answered "try again"
// within wait instead of waiting for the whole recovery. Other waits are
// bounded by ctx only. wait <= 0 is Update.
func (s *Store) UpdateRecoveryBound(ctx context.Context, wait time.Duration, fn func(tx *Tx) error) error {
	return s.runBounded(ctx, false, wait, fn)
}

// View runs fn in a read-only transaction (a consistent view under PR
// locks). Changes made through tx are discarded.
func (s *Store) View(ctx context.Context, fn func(tx *Tx) error) error {
	return s.run(ctx, false, func(tx *Tx) error {
		err := fn(tx)
		tx.dirty, tx.dirtyOrder, tx.data, tx.records, tx.acks = map[uint64]*dirtyBlock{}, nil, nil, nil, nil
		tx.frees = map[uint64]bool{}
		return err
	})
}
