package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ContentHandler serves the tree fsys over HTTP: GET and HEAD of files with
// a strong ETag and Last-Modified, conditional requests (If-Match,
// If-None-Match, If-Modified-Since, If-Unmodified-Since: RFC 9110 section
// 13), byte ranges with If-Range, one or many (RFC 9110 section 14, multiple
// ranges as multipart/byteranges), content types by extension or sniffing,
// and index.html for a directory. Other methods get 405 with Allow; a path
// that is not a clean slash path inside the tree gets 400 or 404, never a
// file outside it.
//
// Each answer comes from one open file handle: a file replaced by renaming
// a new one over it is served either whole old (a request that opened it
// before) or whole new, never a mix.
// log (nil: none) gets a line for every answer 500. cache sizes the cache
// of whole small files (ContentCache; the zero value: none).
func ContentHandler(fsys fs.FS, log hclog.Logger, cache ContentCache) http.Handler {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &contentHandler{fsys: fsys, log: log, cache: newFileCache(cache)}
}

type contentHandler struct {
	fsys  fs.FS
	log   hclog.Logger
	cache *fileCache // nil: off
}

// serveCached answers r from the cache when name (or a directory's
// index.html) is a regular file small enough to be cached; false leaves
// the request to the plain path (errors, redirects, large files, files
// changing while read).
func (h *contentHandler) serveCached(w http.ResponseWriter, r *http.Request, name string) bool {
	fi, err := fs.Stat(h.fsys, name)
	if err != nil {
		return false
	}
	if fi.IsDir() {
		if !strings.HasSuffix(r.URL.Path, "/") {
			return false
		}
		name = path.Join(name, "index.html")
		if fi, err = fs.Stat(h.fsys, name); err != nil {
			return false
		}
	}
	if !fi.Mode().IsRegular() || fi.Size() > h.cache.maxFile {
		return false
	}
	id, ok := identityOf(fi)
	if !ok {
		return false
	}
	f := h.cache.lookup(h.fsys, name, id)
	if f == nil {
		return false
	}
	f.serve(w, r)
	return true
}

func (h *contentHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := treePath(r.URL.Path)
	if !ok {
		http.Error(w, "400 bad request: path leaves the tree", http.StatusBadRequest)
		return
	}
	if h.cache != nil && h.serveCached(w, r, name) {
		return
	}
	f, err := h.fsys.Open(name)
	if err != nil {
		h.openError(w, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		h.openError(w, err)
		return
	}
	if fi.IsDir() {
		if !strings.HasSuffix(r.URL.Path, "/") {
			// As nginx and http.FileServer do: relative links in the index
			// resolve against the directory.
			target := r.URL.Path + "/"
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, target, http.StatusMovedPermanently)
			return
		}
		f.Close()
		index := path.Join(name, "index.html")
		if f, err = h.fsys.Open(index); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				// nginx without autoindex answers 403 for a directory
				// without an index.
				http.Error(w, "403 forbidden", http.StatusForbidden)
				return
			}
			h.openError(w, err)
			return
		}
		defer f.Close()
		if fi, err = f.Stat(); err != nil || fi.IsDir() {
			http.Error(w, "403 forbidden", http.StatusForbidden)
			return
		}
		name = index
	}
	if !fi.Mode().IsRegular() {
		http.Error(w, "403 forbidden", http.StatusForbidden)
		return
	}
	content, err := seeker(f, fi)
	if err != nil {
		h.openError(w, err)
		return
	}
	etag, err := strongETag(fi, content)
	if err != nil {
		h.openError(w, err)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Accept-Ranges", "bytes")
	// ServeContent answers conditional and range requests from the ETag and
	// modification time set here (RFC 9110 sections 13.2.2 and 14.2).
	http.ServeContent(w, r, path.Base(name), fi.ModTime().UTC().Truncate(time.Second), content)
}

func (h *contentHandler) openError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrInvalid), errors.Is(err, syscall.ENOTDIR):
		http.Error(w, "404 not found", http.StatusNotFound)
	case errors.Is(err, fs.ErrPermission):
		http.Error(w, "403 forbidden", http.StatusForbidden)
	default:
		h.log.Error("serving a file failed", "error", err)
		http.Error(w, "500 internal server error", http.StatusInternalServerError)
	}
}

// treePath maps a URL path to a name inside the tree: ok is false for a
// path that is not absolute, holds a NUL or backslash, or has a ".." or "."
// element (a browser resolves those before sending; a request that still
// has them is trying to leave the tree).
func treePath(p string) (string, bool) {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\x00\\") {
		return "", false
	}
	rel := strings.Trim(p, "/")
	if rel == "" {
		return ".", true
	}
	for rest := rel; rest != ""; {
		var el string
		el, rest, _ = strings.Cut(rest, "/")
		if el == ".." || el == "." {
			return "", false
		}
	}
	// Doubled slashes are harmless: collapse them as nginx does.
	rel = path.Clean(rel)
	if !fs.ValidPath(rel) {
		return "", false
	}
	return rel, true
}

// seeker gives the file as an io.ReadSeeker for ServeContent: the file
// itself when it seeks, a section reader when it reads at offsets, else its
// content read once into memory.
func seeker(f fs.File, fi fs.FileInfo) (io.ReadSeeker, error) {
	if rs, ok := f.(io.ReadSeeker); ok {
		return rs, nil
	}
	if ra, ok := f.(io.ReaderAt); ok {
		return io.NewSectionReader(ra, 0, fi.Size()), nil
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// strongETag derives a strong entity tag (RFC 9110 section 8.8.3): from the
// file's identity (inode, generation), size and modification time when the
// store offers them, which change whenever the bytes do; otherwise from the
// SHA-256 of the content, read once and rewound.
func strongETag(fi fs.FileInfo, content io.ReadSeeker) (string, error) {
	if id, ok := identityOf(fi); ok {
		return id.etag(), nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, content); err != nil {
		return "", err
	}
	if _, err := content.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`, nil
}

// subTree is fsys below dir, as fs.Sub, but with Stat passed through
// (fs.Sub's tree has none, so every fs.Stat would open and close the file
// in the store).
func subTree(fsys fs.FS, dir string) (fs.StatFS, error) {
	if !fs.ValidPath(dir) {
		return nil, &fs.PathError{Op: "sub", Path: dir, Err: fs.ErrInvalid}
	}
	return &sub{fsys: fsys, dir: dir}, nil
}

type sub struct {
	fsys fs.FS
	dir  string
}

func (s *sub) full(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if s.dir == "." {
		return name, nil
	}
	if name == "." {
		return s.dir, nil
	}
	return s.dir + "/" + name, nil
}

// shorten gives err the name the caller used.
func (s *sub) shorten(err error, name string) error {
	if pe, ok := err.(*fs.PathError); ok {
		return &fs.PathError{Op: pe.Op, Path: name, Err: pe.Err}
	}
	return err
}

func (s *sub) Open(name string) (fs.File, error) {
	full, err := s.full("open", name)
	if err != nil {
		return nil, err
	}
	f, err := s.fsys.Open(full)
	if err != nil {
		return nil, s.shorten(err, name)
	}
	return f, nil
}

func (s *sub) Stat(name string) (fs.FileInfo, error) {
	full, err := s.full("stat", name)
	if err != nil {
		return nil, err
	}
	fi, err := fs.Stat(s.fsys, full)
	if err != nil {
		return nil, s.shorten(err, name)
	}
	return fi, nil
}
