// Package memstore is an in-memory twin of the shared store for the web
// tier's unit tests: one file tree shared by several node slots, a journal of
// application records per slot, transactions that commit whole or not at all,
// fencing of a slot (its commits fail from then on) and replay of a fenced
// slot's records to a handler, exactly once, with the replay cursor advanced
// in the handler's own transaction.
//
// Transactions are serialised by one mutex: the twin is a reference model,
// not a performance model.
package memstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/web/session"
)

// ErrFenced reports a write from a fenced slot: nothing was committed. Not
// safe to retry on this node; the node must restart as a new incarnation.
var ErrFenced = errors.New("memstore: slot is fenced")

// Record is one application record of a slot's journal.
type Record struct {
	Kind    string
	Slot    int
	Seq     uint64
	Payload []byte
}

type file struct {
	data []byte
	mod  time.Time
	ino  uint64
	gen  uint64
}

// Volume is the shared tree and the journals.
type Volume struct {
	mu       sync.Mutex
	now      func() time.Time
	files    map[string]*file
	nextIno  uint64
	journals map[int][]Record
	acked    map[int]map[uint64]bool
	cursors  map[int]int
	fenced   map[int]bool
	// BeforeCommit, when set, runs at the commit point of every
	// transaction (under the volume's lock, before anything is applied);
	// an error aborts the commit. Tests use it to crash between steps.
	BeforeCommit func(slot int) error
}

// New returns an empty volume whose file times come from now.
func New(now func() time.Time) *Volume {
	return &Volume{now: now, files: map[string]*file{}, nextIno: 1, journals: map[int][]Record{},
		acked: map[int]map[uint64]bool{}, cursors: map[int]int{}, fenced: map[int]bool{}}
}

// Node is one slot's handle on the volume.
type Node struct {
	v    *Volume
	slot int
}

// Node returns the handle of slot.
func (v *Volume) Node(slot int) *Node { return &Node{v: v, slot: slot} }

// Slot is the handle's slot.
func (n *Node) Slot() int { return n.slot }

// Fence cuts slot off: its commits fail with ErrFenced until Unfence.
func (v *Volume) Fence(slot int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fenced[slot] = true
}

// Unfence lets slot write again (a new incarnation after its journal was
// replayed).
func (v *Volume) Unfence(slot int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.fenced, slot)
}

// Journal returns a copy of slot's records.
func (v *Volume) Journal(slot int) []Record {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Record(nil), v.journals[slot]...)
}

type tx struct {
	v      *Volume
	slot   int
	writes map[string][]byte // nil value: removed
	logs   []Record
	acks   []uint64
}

func clean(name string) (string, error) {
	if !fs.ValidPath(name) || name == "." {
		return "", &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	return name, nil
}

func (t *tx) ReadFile(name string) ([]byte, error) {
	name, err := clean(name)
	if err != nil {
		return nil, err
	}
	if d, ok := t.writes[name]; ok {
		if d == nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return bytes.Clone(d), nil
	}
	f, ok := t.v.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return bytes.Clone(f.data), nil
}

func (t *tx) WriteFile(name string, data []byte, _ fs.FileMode) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	t.writes[name] = append([]byte{}, data...)
	return nil
}

func (t *tx) Remove(name string) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if _, err := t.ReadFile(name); err != nil {
		return err
	}
	t.writes[name] = nil
	return nil
}

func (t *tx) Log(kind string, payload []byte) (uint64, error) {
	seq := uint64(len(t.v.journals[t.slot]) + len(t.logs) + 1)
	t.logs = append(t.logs, Record{Kind: kind, Slot: t.slot, Seq: seq, Payload: bytes.Clone(payload)})
	return seq, nil
}

func (t *tx) Ack(id uint64) { t.acks = append(t.acks, id) }

// commit applies t under v.mu.
func (t *tx) commit() error {
	v := t.v
	if v.fenced[t.slot] {
		return ErrFenced
	}
	if v.BeforeCommit != nil {
		if err := v.BeforeCommit(t.slot); err != nil {
			return err
		}
	}
	now := v.now()
	names := make([]string, 0, len(t.writes))
	for name := range t.writes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		d := t.writes[name]
		if d == nil {
			delete(v.files, name)
			continue
		}
		v.nextIno++
		v.files[name] = &file{data: d, mod: now, ino: v.nextIno, gen: 1}
	}
	v.journals[t.slot] = append(v.journals[t.slot], t.logs...)
	for _, id := range t.acks {
		if v.acked[t.slot] == nil {
			v.acked[t.slot] = map[uint64]bool{}
		}
		v.acked[t.slot][id] = true
	}
	return nil
}

// Update runs fn as one transaction of the node's slot: its writes and
// logged records commit together when fn returns nil, or not at all.
// ErrFenced when the slot is fenced (also when it was fenced while fn ran).
func (n *Node) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v := n.v
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fenced[n.slot] {
		return ErrFenced
	}
	t := &tx{v: v, slot: n.slot, writes: map[string][]byte{}}
	if err := fn(t); err != nil {
		return err
	}
	return t.commit()
}

// Replay hands every record of dead's journal past its replay cursor and not
// acknowledged to
// handler, in journal order, each in a transaction of the coordinator slot
// that also advances the cursor: a record is handled exactly once even when
// the coordinator dies (is fenced) part way. dead must be fenced.
func (v *Volume) Replay(ctx context.Context, coordinator, dead int, handler func(tx session.Tx, rec Record) error) (int, error) {
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		v.mu.Lock()
		if !v.fenced[dead] {
			v.mu.Unlock()
			return n, fmt.Errorf("memstore: replay of slot %d, which is not fenced", dead)
		}
		if v.fenced[coordinator] {
			v.mu.Unlock()
			return n, ErrFenced
		}
		i := v.cursors[dead]
		if i >= len(v.journals[dead]) {
			v.mu.Unlock()
			return n, nil
		}
		rec := v.journals[dead][i]
		t := &tx{v: v, slot: coordinator, writes: map[string][]byte{}}
		var err error
		if !v.acked[dead][rec.Seq] {
			err = handler(t, rec)
		}
		if err == nil {
			err = t.commit()
		}
		if err == nil {
			v.cursors[dead] = i + 1
		}
		v.mu.Unlock()
		if err != nil {
			return n, err
		}
		n++
	}
}

// WriteFile replaces name whole, as a new file renamed over the old one (a
// new inode), in a transaction of the node.
func (n *Node) WriteFile(name string, data []byte) error {
	return n.Update(context.Background(), func(tx session.Tx) error { return tx.WriteFile(name, data, 0o644) })
}

// MkdirAll does nothing: directories exist while files lie under them.
func (n *Node) MkdirAll(string, fs.FileMode) error { return nil }

// FileStat is what Stat's Sys() returns: the inode and its generation.
type FileStat struct {
	Ino uint64
	Gen uint64
}

// Inode is the file's inode number.
func (s FileStat) Inode() uint64 { return s.Ino }

// Generation is the inode's generation.
func (s FileStat) Generation() uint64 { return s.Gen }

// Open opens name for reading (fs.FS). An open file keeps the contents it
// had when opened, as a file replaced by rename keeps its old inode.
func (n *Node) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	v := n.v
	v.mu.Lock()
	defer v.mu.Unlock()
	if f, ok := v.files[name]; ok {
		return &openFile{info: info{name: path.Base(name), size: int64(len(f.data)), mod: f.mod, sys: FileStat{f.ino, f.gen}},
			r: bytes.NewReader(f.data)}, nil
	}
	// A directory exists when some file lies under it.
	prefix := name + "/"
	if name == "." {
		prefix = ""
	}
	children := map[string]fs.DirEntry{}
	for fname, f := range v.files {
		if !strings.HasPrefix(fname, prefix) {
			continue
		}
		rest := fname[len(prefix):]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			children[rest[:i]] = fs.FileInfoToDirEntry(info{name: rest[:i], dir: true})
		} else {
			children[rest] = fs.FileInfoToDirEntry(info{name: rest, size: int64(len(f.data)), mod: f.mod, sys: FileStat{f.ino, f.gen}})
		}
	}
	if len(children) == 0 && name != "." {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	ents := make([]fs.DirEntry, 0, len(children))
	for _, e := range children {
		ents = append(ents, e)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return &openDir{info: info{name: path.Base(name), dir: true}, ents: ents}, nil
}

type info struct {
	name string
	size int64
	mod  time.Time
	dir  bool
	sys  any
}

func (i info) Name() string       { return i.name }
func (i info) Size() int64        { return i.size }
func (i info) ModTime() time.Time { return i.mod }
func (i info) IsDir() bool        { return i.dir }
func (i info) Sys() any           { return i.sys }
func (i info) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}

type openFile struct {
	info info
	r    *bytes.Reader
}

func (f *openFile) Stat() (fs.FileInfo, error)                { return f.info, nil }
func (f *openFile) Read(p []byte) (int, error)                { return f.r.Read(p) }
func (f *openFile) Seek(off int64, whence int) (int64, error) { return f.r.Seek(off, whence) }
func (f *openFile) ReadAt(p []byte, off int64) (int, error)   { return f.r.ReadAt(p, off) }
func (f *openFile) Close() error                              { return nil }

type openDir struct {
	info info
	ents []fs.DirEntry
	pos  int
}

func (d *openDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *openDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}
func (d *openDir) Close() error { return nil }
func (d *openDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.ents[d.pos:]
	if n <= 0 {
		d.pos = len(d.ents)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	if n > len(rest) {
		n = len(rest)
	}
	d.pos += n
	return rest[:n], nil
}
