package web

import (
	"bytes"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-ha/shoal/store"
)

// ContentCache sizes the content handler's cache of whole files. A cached
// file is served from memory only while a stat of its path (lock-free in
// the store, and coherent: a file renamed over it or rewritten in place
// has another identity at once, on every node) still finds the identity it
// was read with: inode, generation, size and modification time, the same
// that make its strong ETag. A file whose FileInfo offers no identity is
// never cached.
type ContentCache struct {
	// Bytes bounds the cached files' bytes in all; 0 turns the cache off.
	Bytes int64
	// MaxFile bounds the size of one cached file in bytes; larger files
	// are read from the store at each request.
	MaxFile int64
}

// fileID is what a cached file's validity is checked against.
type fileID struct {
	dev, ino, gen uint64
	size          int64
	mtime         int64 // Unix nanoseconds
}

// identityOf gives fi's identity when its Sys() offers one.
func identityOf(fi fs.FileInfo) (fileID, bool) {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	switch sys := fi.Sys().(type) {
	case FileIdentity:
		id.ino, id.gen = sys.Inode(), sys.Generation()
	case store.FileStat:
		id.ino, id.gen = sys.Ino, uint64(sys.Gen)
	case *syscall.Stat_t:
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	default:
		return fileID{}, false
	}
	return id, true
}

// etag is the strong entity tag of the file with identity id (RFC 9110
// section 8.8.3): it changes whenever the identity does.
func (id fileID) etag() string {
	b := make([]byte, 0, 64)
	b = append(b, '"')
	b = appendHex(b, id.ino)
	if id.dev == 0 {
		b = append(b, '-')
		b = appendHex(b, id.gen)
	}
	b = append(b, '-')
	b = appendHex(b, uint64(id.size))
	b = append(b, '-')
	b = appendHex(b, uint64(id.mtime))
	return string(append(b, '"'))
}

func appendHex(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	var tmp [16]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[v&15]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// cachedFile is one file's bytes and the headers derived from them; it is
// never changed once made.
type cachedFile struct {
	id      fileID
	data    []byte
	modTime time.Time
	// Header values, shared by every answer (full slices: an append
	// copies).
	etag, ctype, lastModified, length []string
}

type fileCache struct {
	max, maxFile int64

	mu    sync.RWMutex
	files map[string]*cachedFile
	bytes int64
}

func newFileCache(c ContentCache) *fileCache {
	if c.Bytes <= 0 || c.MaxFile <= 0 {
		return nil
	}
	return &fileCache{max: c.Bytes, maxFile: min(c.MaxFile, c.Bytes), files: map[string]*cachedFile{}}
}

func (c *fileCache) get(name string) *cachedFile {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.files[name]
}

// put caches f under name, evicting others (in no particular order) to
// stay within the budget.
func (c *fileCache) put(name string, f *cachedFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.files[name]; old != nil {
		c.bytes -= int64(len(old.data))
	}
	c.files[name] = f
	c.bytes += int64(len(f.data))
	for victim, v := range c.files {
		if c.bytes <= c.max {
			break
		}
		if victim != name {
			delete(c.files, victim)
			c.bytes -= int64(len(v.data))
		}
	}
}

// lookup returns the cached file for name when it is cached with identity
// id, else reads it whole and caches it. nil means the file is not to be
// served from the cache (changing while read, or unreadable: the plain path
// answers).
func (c *fileCache) lookup(fsys fs.FS, name string, id fileID) *cachedFile {
	if f := c.get(name); f != nil && f.id == id {
		return f
	}
	f, err := c.read(fsys, name)
	if err != nil || f == nil {
		return nil
	}
	c.put(name, f)
	return f
}

// read reads name whole through one open handle, and only trusts what it
// read if the handle's identity is the same after the read as before.
func (c *fileCache) read(fsys fs.FS, name string) (*cachedFile, error) {
	fl, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer fl.Close()
	before, err := fl.Stat()
	if err != nil || !before.Mode().IsRegular() || before.Size() > c.maxFile {
		return nil, err
	}
	id, ok := identityOf(before)
	if !ok {
		return nil, nil
	}
	data := make([]byte, before.Size())
	if _, err := io.ReadFull(fl, data); err != nil {
		return nil, err
	}
	var one [1]byte
	if n, _ := fl.Read(one[:]); n != 0 {
		return nil, nil // grew while read
	}
	after, err := fl.Stat()
	if err != nil {
		return nil, err
	}
	if aid, ok := identityOf(after); !ok || aid != id {
		return nil, nil // changed while read
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		// As http.ServeContent does: sniff the first 512 bytes.
		ctype = http.DetectContentType(data[:min(len(data), 512)])
	}
	f := &cachedFile{id: id, data: data, modTime: before.ModTime().UTC().Truncate(time.Second),
		etag: []string{id.etag()}, ctype: []string{ctype}, length: []string{strconv.Itoa(len(data))}}
	if !f.modTime.IsZero() && !f.modTime.Equal(time.Unix(0, 0)) {
		// As http.ServeContent: no Last-Modified for an unknown time.
		f.lastModified = []string{f.modTime.Format(http.TimeFormat)}
	}
	return f, nil
}

var acceptRanges = []string{"bytes"}

// httpDate is the Date header value of the current second (RFC 9110
// section 6.6.1), made once a second instead of once an answer.
var httpDate dateCache

type dateCache struct{ cur atomic.Pointer[dateValue] }

type dateValue struct {
	sec int64
	v   []string
}

// now gives the Date header value (a full slice: an append copies) of the
// wall clock's current second, as net/http would send.
func (d *dateCache) now() []string {
	t := time.Now()
	if c := d.cur.Load(); c != nil && c.sec == t.Unix() {
		return c.v[:1:1]
	}
	c := &dateValue{sec: t.Unix(), v: []string{t.UTC().Format(http.TimeFormat)}}
	d.cur.Store(c)
	return c.v[:1:1]
}

// serve answers r from f: conditional and range requests by
// http.ServeContent, as for a file read from the store; a plain GET or
// HEAD with the same headers ServeContent would send, the body written
// whole (one write, where ServeContent's copy makes two for a small file).
func (f *cachedFile) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Etag"] = f.etag[:1:1]
	h["Accept-Ranges"] = acceptRanges[:1:1]
	h["Content-Type"] = f.ctype[:1:1]
	if !conditional(r.Header) {
		if f.lastModified != nil {
			h["Last-Modified"] = f.lastModified[:1:1]
		}
		h["Content-Length"] = f.length[:1:1]
		if r.ProtoMajor == 2 {
			// net/http's HTTP/2 server formats a Date for every answer
			// that has none (HTTP/1.1 appends it without allocating).
			h["Date"] = httpDate.now()
		}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(f.data)
		}
		return
	}
	http.ServeContent(w, r, "", f.modTime, bytes.NewReader(f.data))
}

// conditional reports whether a request has headers that make its answer
// other than the whole file with 200: preconditions (RFC 9110 section
// 13.1) or a range (section 14.2).
func conditional(h http.Header) bool {
	for _, k := range []string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"} {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}
