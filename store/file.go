package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"
)

// File is an open file or directory of the store. Writes are kept in
// memory (up to Config.WriteBuffer bytes) and committed in one
// transaction by Sync, Close, or when the buffer fills; each commit is
// atomic (copy on write: a crash leaves the data of the previous commit
// or of this one). Reads see the last committed contents of any node plus
// this File's own uncommitted writes. A File is safe for concurrent use.
type File struct {
	s     *Store
	name  string
	ino   uint64
	gen   uint32
	isDir bool
	flag  int

	mu        sync.Mutex
	off       int64
	size      int64 // this handle's size when sizeDirty
	sizeDirty bool
	pages     map[uint64]*page
	closed    bool

	dirEnts []dirEntry
	dirPos  int
	dirRead bool
}

// page is one block of uncommitted writes; mask marks the bytes written.
type page struct {
	data  []byte
	mask  []byte // one bit per byte
	whole bool   // every byte written (mask all ones)
}

func (p *page) full() bool {
	if p.whole {
		return true
	}
	for _, b := range p.mask {
		if b != 0xff {
			return false
		}
	}
	return true
}

func (p *page) set(off int, src []byte) {
	copy(p.data[off:], src)
	if p.whole {
		return
	}
	if off == 0 && len(src) >= BlockSize {
		p.whole = true
		for k := range p.mask {
			p.mask[k] = 0xff
		}
		return
	}
	i, end := off, off+len(src)
	for ; i < end && i%8 != 0; i++ {
		p.mask[i/8] |= 1 << (i % 8)
	}
	for ; i+8 <= end; i += 8 {
		p.mask[i/8] = 0xff
	}
	for ; i < end; i++ {
		p.mask[i/8] |= 1 << (i % 8)
	}
}

// pagePool recycles the pages of committed writes: a large write goes
// through one page per block, and allocating each anew cost as much
// garbage as the data written.
var pagePool = sync.Pool{New: func() any { return &page{data: make([]byte, BlockSize), mask: make([]byte, BlockSize/8)} }}

func newPage() *page { return pagePool.Get().(*page) }

// recycle gives p back once nothing refers to it. Its bytes need no
// clearing: only those its mask marks are ever read.
func (p *page) recycle() {
	clear(p.mask)
	p.whole = false
	pagePool.Put(p)
}

// merge overlays the written bytes of p onto base (BlockSize long).
func (p *page) merge(base []byte) {
	if p.full() {
		copy(base, p.data)
		return
	}
	for i := 0; i < BlockSize; i++ {
		if p.mask[i/8]&(1<<(i%8)) != 0 {
			base[i] = p.data[i]
		}
	}
}

const accessMode = os.O_RDONLY | os.O_WRONLY | os.O_RDWR

func (f *File) writable() bool { return f.flag&accessMode != os.O_RDONLY }
func (f *File) readable() bool { return f.flag&accessMode != os.O_WRONLY }

// OpenFile opens name with flag (os.O_RDONLY, os.O_WRONLY or os.O_RDWR,
// with os.O_CREATE, os.O_EXCL, os.O_TRUNC, os.O_APPEND) creating it with
// permission bits perm. Errors in a *fs.PathError: fs.ErrNotExist,
// fs.ErrExist (O_EXCL), ErrIsDir (a directory opened for writing),
// ErrNoSpace, fs.ErrInvalid.
func (s *Store) OpenFile(name string, flag int, perm fs.FileMode) (*File, error) {
	f := &File{s: s, name: name, flag: flag, pages: map[uint64]*page{}}
	err := s.run(context.Background(), false, func(tx *Tx) error {
		var in *inode
		var err error
		switch {
		case flag&os.O_CREATE != 0:
			var dir *inode
			var g *glock
			var last string
			if dir, g, last, err = tx.resolveParent(name, Exclusive); err != nil {
				if name == "." && errors.Is(err, fs.ErrInvalid) {
					return ErrIsDir
				}
				return err
			}
			de, ok, err := tx.lookup(g, dir, last)
			if err != nil {
				return err
			}
			if ok && flag&os.O_EXCL != 0 {
				return fs.ErrExist
			}
			if ok {
				var ig *glock
				if in, ig, err = tx.child(de, Exclusive); err != nil {
					return err
				}
				if in.Type == typeFile && flag&os.O_TRUNC != 0 && f.writable() && in.Size > 0 {
					if err := tx.truncateData(ig, in, 0); err != nil {
						return err
					}
					in.Mtime = tx.s.now()
					if err := tx.putInode(ig, in); err != nil {
						return err
					}
				}
			} else {
				var ig *glock
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
				if err := tx.putInode(ig, in); err != nil {
					return err
				}
			}
		case flag&os.O_TRUNC != 0 && f.writable():
			var ig *glock
			if in, ig, err = tx.resolve(name, Exclusive); err != nil {
				return err
			}
			if in.Type == typeFile && in.Size > 0 {
				if err := tx.truncateData(ig, in, 0); err != nil {
					return err
				}
				in.Mtime = tx.s.now()
				if err := tx.putInode(ig, in); err != nil {
					return err
				}
			}
		default:
			if in, _, err = tx.resolve(name, Shared); err != nil {
				return err
			}
		}
		if in.Type == typeDir && f.writable() {
			return ErrIsDir
		}
		f.ino, f.gen, f.isDir = in.Ino, in.Gen, in.Type == typeDir
		if flag&os.O_APPEND != 0 {
			f.off = in.Size
		}
		return nil
	})
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	return f, nil
}

// getInodeFor locks and reads the inode a File (or an identity, ReadFileOf)
// refers to: fs.ErrNotExist when it was removed since, its block free, or
// reused for another inode (another generation), metadata of another kind
// or file data (no block header at all).
func (tx *Tx) getInodeFor(ino uint64, gen uint32, mode LockMode) (*inode, *glock, error) {
	g := tx.s.glockFor(classInode, ino)
	if err := tx.lock(g, mode); err != nil {
		return nil, nil, err
	}
	b, err := tx.read(g, ino)
	if err != nil {
		return nil, nil, err
	}
	if len(b) == BlockSize && binary.LittleEndian.Uint32(b) != blockMagic {
		// Reused for file data, which has no block header. A damaged
		// inode block usually keeps its magic (what damages a block flips
		// some bits, and the mirror repairs a block damaged on one leg):
		// it fails the header's checksum below, as ErrCorrupt. One wiped
		// from its start on every leg reads as removed here; a path
		// lookup and the check still report it.
		return nil, nil, fmt.Errorf("%w: removed (block %d holds file data now)", fs.ErrNotExist, ino)
	}
	h, err := openBlock(b, ino, 0)
	if err != nil {
		return nil, nil, err
	}
	if h.Kind != KindInode || h.Gen != gen {
		return nil, nil, fmt.Errorf("%w: removed", fs.ErrNotExist)
	}
	in, err := decodeInode(b, ino)
	if err != nil {
		return nil, nil, err
	}
	if in.Nlink == 0 {
		return nil, nil, fmt.Errorf("%w: removed", fs.ErrNotExist)
	}
	if in.Layout == layoutOverflow {
		if in.Extents, err = tx.readExtentChain(g, in); err != nil {
			return nil, nil, err
		}
	}
	return in, g, nil
}

// Name is the name the File was opened with.
func (f *File) Name() string { return f.name }

// Stat describes the file, with this File's uncommitted size.
func (f *File) Stat() (fs.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, pathErr("stat", f.name, fs.ErrClosed)
	}
	var fi *fileInfo
	err := f.s.View(context.Background(), func(tx *Tx) error {
		in, _, err := tx.getInodeFor(f.ino, f.gen, Shared)
		if err != nil {
			return err
		}
		fi = newFileInfo(baseName(f.name), in)
		return nil
	})
	if err != nil {
		return nil, pathErr("stat", f.name, err)
	}
	if f.sizeDirty {
		fi.size = f.size
	}
	return fi, nil
}

// Read reads at the current offset (io.Reader).
func (f *File) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.readAtLocked(p, f.off)
	f.off += int64(n)
	return n, err
}

// ReadAt reads len(p) bytes at off (io.ReaderAt).
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off < 0 {
		return 0, pathErr("read", f.name, fs.ErrInvalid)
	}
	n, err := f.readAtLocked(p, off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

func (f *File) readAtLocked(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, pathErr("read", f.name, fs.ErrClosed)
	}
	if f.isDir {
		return 0, pathErr("read", f.name, ErrIsDir)
	}
	if !f.readable() {
		return 0, pathErr("read", f.name, errNotOpen)
	}
	var n int
	err := f.s.View(context.Background(), func(tx *Tx) error {
		in, _, err := tx.getInodeFor(f.ino, f.gen, Shared)
		if err != nil {
			return err
		}
		size := in.Size
		if f.sizeDirty {
			size = f.size
		}
		if off >= size {
			n = 0
			return nil
		}
		n = len(p)
		if int64(n) > size-off {
			n = int(size - off)
		}
		buf := p[:n]
		// Committed data (zeros past the committed size), then this
		// handle's own writes over it.
		committed := int64(n)
		if off >= in.Size {
			committed = 0
		} else if off+committed > in.Size {
			committed = in.Size - off
		}
		if err := tx.readData(in, buf[:committed], off); err != nil {
			return err
		}
		clear(buf[committed:])
		for pos := off; pos < off+int64(n); {
			fb := uint64(pos / BlockSize)
			inb := int(pos % BlockSize)
			l := BlockSize - inb
			if int64(l) > off+int64(n)-pos {
				l = int(off + int64(n) - pos)
			}
			if pg := f.pages[fb]; pg != nil {
				seg := buf[pos-off : pos-off+int64(l)]
				for i := 0; i < l; i++ {
					if pg.mask[(inb+i)/8]&(1<<((inb+i)%8)) != 0 {
						seg[i] = pg.data[inb+i]
					}
				}
			}
			pos += int64(l)
		}
		return nil
	})
	if err != nil {
		return 0, pathErr("read", f.name, err)
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Seek sets the offset (io.Seeker); io.SeekEnd is relative to the size
// including this File's uncommitted writes.
func (f *File) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, pathErr("seek", f.name, fs.ErrClosed)
	}
	var base int64
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		base = f.off
	case io.SeekEnd:
		size, err := f.sizeLocked()
		if err != nil {
			return 0, err
		}
		base = size
	default:
		return 0, pathErr("seek", f.name, fs.ErrInvalid)
	}
	if base+offset < 0 {
		return 0, pathErr("seek", f.name, fs.ErrInvalid)
	}
	f.off = base + offset
	return f.off, nil
}

func (f *File) sizeLocked() (int64, error) {
	if f.sizeDirty {
		return f.size, nil
	}
	var size int64
	err := f.s.View(context.Background(), func(tx *Tx) error {
		in, _, err := tx.getInodeFor(f.ino, f.gen, Shared)
		if err == nil {
			size = in.Size
		}
		return err
	})
	return size, pathErr("stat", f.name, err)
}

// MaxFileSize is the largest file the store keeps, in bytes.
const MaxFileSize = 1 << 40

// Write writes at the current offset (at the end with os.O_APPEND).
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.flag&os.O_APPEND != 0 && !f.closed {
		size, err := f.sizeLocked()
		if err != nil {
			return 0, err
		}
		f.off = size
	}
	n, err := f.writeAtLocked(p, f.off)
	f.off += int64(n)
	return n, err
}

// WriteAt writes p at off (io.WriterAt). Not allowed with os.O_APPEND.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.flag&os.O_APPEND != 0 {
		return 0, pathErr("write", f.name, errors.New("WriteAt on a file opened with O_APPEND"))
	}
	return f.writeAtLocked(p, off)
}

func (f *File) writeAtLocked(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, pathErr("write", f.name, fs.ErrClosed)
	}
	if !f.writable() {
		return 0, pathErr("write", f.name, errNotOpen)
	}
	if off < 0 {
		return 0, pathErr("write", f.name, fs.ErrInvalid)
	}
	if off+int64(len(p)) > MaxFileSize {
		return 0, pathErr("write", f.name, ErrTooLarge)
	}
	if len(p) == 0 {
		return 0, nil
	}
	size, err := f.sizeLocked()
	if err != nil {
		return 0, err
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		fb := uint64(pos / BlockSize)
		inb := int(pos % BlockSize)
		l := BlockSize - inb
		if l > len(p)-done {
			l = len(p) - done
		}
		pg := f.pages[fb]
		if pg == nil {
			pg = newPage()
			f.pages[fb] = pg
		}
		pg.set(inb, p[done:done+l])
		done += l
	}
	if end := off + int64(len(p)); end > size {
		f.size, f.sizeDirty = end, true
	} else if !f.sizeDirty {
		f.size, f.sizeDirty = size, true
	}
	if len(f.pages)*BlockSize >= f.s.cfg.WriteBuffer {
		if err := f.commitLocked(); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// Truncate sets the file's size; bytes past it are gone, a grown file
// reads zeros. Committed with the File's other writes.
func (f *File) Truncate(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return pathErr("truncate", f.name, fs.ErrClosed)
	}
	if !f.writable() {
		return pathErr("truncate", f.name, errNotOpen)
	}
	if size < 0 || size > MaxFileSize {
		return pathErr("truncate", f.name, fs.ErrInvalid)
	}
	old, err := f.sizeLocked()
	if err != nil {
		return err
	}
	keep := uint64((size + BlockSize - 1) / BlockSize)
	for fb := range f.pages {
		if fb >= keep {
			delete(f.pages, fb)
		}
	}
	if size%BlockSize != 0 && size < old {
		// The bytes of the last block past the new size become zeros.
		fb := uint64(size / BlockSize)
		pg := f.pages[fb]
		if pg == nil {
			pg = newPage()
			f.pages[fb] = pg
		}
		inb := int(size % BlockSize)
		pg.set(inb, make([]byte, BlockSize-inb))
	}
	f.size, f.sizeDirty = size, true
	return nil
}

// commitLocked commits the buffered writes and size in one transaction.
func (f *File) commitLocked() error {
	if !f.sizeDirty && len(f.pages) == 0 {
		return nil
	}
	err := f.s.run(context.Background(), false, func(tx *Tx) error {
		in, g, err := tx.getInodeFor(f.ino, f.gen, Exclusive)
		if err != nil {
			return err
		}
		newSize := in.Size
		if f.sizeDirty {
			newSize = f.size
		}
		if err := tx.applyPages(g, in, f.pages, newSize); err != nil {
			return err
		}
		in.Mtime = tx.s.now()
		return tx.putInode(g, in)
	})
	if err != nil {
		return pathErr("write", f.name, err)
	}
	// Committed: the pages' bytes are in the transaction's own buffers.
	for _, pg := range f.pages {
		pg.recycle()
	}
	f.pages = map[uint64]*page{}
	f.sizeDirty = false
	return nil
}

// runPool recycles the buffers that runs of file blocks are assembled in
// for their commit (Tx.runBuffer): a sequential writer commits its
// Config.WriteBuffer every time it fills, and a new buffer each time cost
// an allocation and a clearing of its size, a third of the writer's CPU.
var runPool sync.Pool

// runBuffer returns a buffer of n blocks for a run of file data written in
// place. A run of more than journaledData blocks never goes through the
// journal, so nothing refers to its buffer once the transaction committed
// (every write of it returned: a device keeps no buffer after WriteAt,
// see blockdev.Device) and recycleRuns gives it back; smaller ones are
// allocated (their images may stay in memory after the commit:
// deferInPlace), and so are the buffers of an attempt that did not
// commit (a write that failed may still be on its way). Its bytes are
// whatever a previous commit left.
func (tx *Tx) runBuffer(n int) []byte {
	if n <= journaledData {
		return make([]byte, n*BlockSize)
	}
	if b, ok := runPool.Get().(*[]byte); ok {
		if cap(*b) >= n*BlockSize {
			tx.pooled = append(tx.pooled, b)
			return (*b)[:n*BlockSize]
		}
		runPool.Put(b)
	}
	b := make([]byte, n*BlockSize)
	tx.pooled = append(tx.pooled, &b)
	return b
}

// recycleRuns gives the run buffers of a committed transaction back.
func (tx *Tx) recycleRuns() {
	for _, b := range tx.pooled {
		runPool.Put(b)
	}
	tx.pooled = nil
}

// applyPages writes buffered pages into in and sets its size.
func (tx *Tx) applyPages(g *glock, in *inode, pages map[uint64]*page, newSize int64) error {
	if in.Layout == layoutInline && newSize <= maxInlineData {
		buf := make([]byte, newSize)
		copy(buf, in.Inline)
		if pg := pages[0]; pg != nil {
			base := make([]byte, BlockSize)
			copy(base, buf)
			pg.merge(base)
			copy(buf, base)
		}
		in.Inline, in.Size = buf, newSize
		return nil
	}
	var inlineBase []byte
	if in.Layout == layoutInline {
		inlineBase = in.Inline
		in.Layout, in.Inline, in.Extents = layoutExtents, nil, nil
		if len(inlineBase) > 0 && pages[0] == nil {
			pages[0] = newPage() // carry the inline bytes into block 0
		}
	}
	if newSize < in.Size {
		if err := tx.truncateData(g, in, newSize); err != nil {
			return err
		}
		if newSize == 0 {
			return nil
		}
	}
	fbs := make([]uint64, 0, len(pages))
	for fb := range pages {
		if int64(fb)*BlockSize < newSize {
			fbs = append(fbs, fb)
		}
	}
	sort.Slice(fbs, func(i, j int) bool { return fbs[i] < fbs[j] })
	// Runs of consecutive file blocks go to newly allocated blocks.
	for i := 0; i < len(fbs); {
		j := i + 1
		for j < len(fbs) && fbs[j] == fbs[j-1]+1 {
			j++
		}
		run := tx.runBuffer(j - i)
		for k, fb := range fbs[i:j] {
			pg := pages[fb]
			base := run[k*BlockSize : (k+1)*BlockSize]
			if !pg.full() {
				clear(base) // a recycled buffer holds another commit's bytes
				switch {
				case fb == 0 && inlineBase != nil:
					copy(base, inlineBase)
				default:
					if old := extFind(in.Extents, fb); old != 0 {
						if err := tx.readDataBlock(in.Ino, old, base); err != nil {
							return err
						}
					}
				}
			}
			pg.merge(base)
			if end := int64(fb+1) * BlockSize; end > newSize {
				clear(base[newSize-int64(fb)*BlockSize:])
			}
		}
		if err := tx.setBlocks(in, fbs[i], run); err != nil {
			return err
		}
		i = j
	}
	in.Size = newSize
	return nil
}

// Sync commits the File's writes; they are durable when it returns.
func (f *File) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return pathErr("sync", f.name, fs.ErrClosed)
	}
	return f.commitLocked()
}

// Close commits the File's writes (durable when it returns) and closes
// it. A failed commit is returned; the File is closed anyway.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, fs.ErrClosed)
	}
	err := f.commitLocked()
	f.closed = true
	f.pages = nil
	return err
}

// ReadDir lists the directory (fs.ReadDirFile): with n > 0 at most n
// entries per call and io.EOF at the end; with n <= 0 all the rest.
func (f *File) ReadDir(n int) ([]fs.DirEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, pathErr("readdir", f.name, fs.ErrClosed)
	}
	if !f.isDir {
		return nil, pathErr("readdir", f.name, ErrNotDir)
	}
	if !f.dirRead {
		err := f.s.View(context.Background(), func(tx *Tx) error {
			in, g, err := tx.getInodeFor(f.ino, f.gen, Shared)
			if err != nil {
				return err
			}
			f.dirEnts, err = tx.listDir(g, in)
			return err
		})
		if err != nil {
			return nil, pathErr("readdir", f.name, err)
		}
		f.dirRead = true
	}
	rest := f.dirEnts[f.dirPos:]
	if n > 0 && len(rest) == 0 {
		return nil, io.EOF
	}
	if n > 0 && n < len(rest) {
		rest = rest[:n]
	}
	f.dirPos += len(rest)
	out := make([]fs.DirEntry, len(rest))
	for i, e := range rest {
		out[i] = &dirEntryInfo{f.s, e}
	}
	return out, nil
}
