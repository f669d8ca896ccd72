package storenode

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store"
)

var _ node.Mounter = (*Part)(nil)

// CheckTimeout bounds one online check through the admin API.
const CheckTimeout = 5 * time.Minute

// Mount adds the store's admin routes (read-only role):
//
//	GET /api/store/check            store.CheckReport of the online check
//	GET /api/store/stat?path=PATH   Entry of a file or directory
//	GET /api/store/ls?path=PATH     []Entry of a directory
//	GET /api/store/cat?path=PATH    a file's bytes
//
// Reads go through the node's own store, under its cached locks (404 for
// a path that does not exist, 400 for a malformed one).
//
// The check reads the tree under shared locks of the node's own lock
// manager while the cluster keeps running (Store.Check); 503 between
// incarnations or on a node without a store, 500 when the check itself
// fails (problems found are in the report, not an error).
func (p *Part) Mount(a *cluster.AdminServer) {
	a.Handle("GET /api/store/stat", p.reader(func(w http.ResponseWriter, st *store.Store, path string) error {
		fi, err := st.Stat(path)
		if err != nil {
			return err
		}
		cluster.WriteJSON(w, http.StatusOK, EntryOf(fi))
		return nil
	}))
	a.Handle("GET /api/store/ls", p.reader(func(w http.ResponseWriter, st *store.Store, path string) error {
		ents, err := st.ReadDir(path)
		if err != nil {
			return err
		}
		out := []Entry{}
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				return err
			}
			out = append(out, EntryOf(fi))
		}
		cluster.WriteJSON(w, http.StatusOK, out)
		return nil
	}))
	a.Handle("GET /api/store/cat", p.reader(func(w http.ResponseWriter, st *store.Store, path string) error {
		f, err := st.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return &fs.PathError{Op: "cat", Path: path, Err: errors.New("is a directory")}
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, err = io.Copy(w, f)
		return err
	}))
	a.Handle("GET /api/store/check", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := p.Store()
		if st == nil {
			http.Error(w, "the store is not open on this node (no incarnation, or no volume)", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), CheckTimeout)
		defer cancel()
		rep, err := st.Check(ctx)
		if err != nil {
			http.Error(w, "store check: "+err.Error(), http.StatusInternalServerError)
			return
		}
		cluster.WriteJSON(w, http.StatusOK, rep)
	}))
}

// FSPath turns a path as an operator writes it ("/", "/site/a.html",
// "site/", "") into the io/fs name the store takes ("." for the root,
// "site/a.html"): the store's tree is rooted, and its names carry no
// leading slash. ".." cannot climb above the root.
func FSPath(p string) string {
	p = strings.TrimLeft(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// reader serves a read of one path of the node's store.
func (p *Part) reader(read func(w http.ResponseWriter, st *store.Store, path string) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := p.Store()
		if st == nil {
			http.Error(w, "the store is not open on this node (no incarnation, or no volume)", http.StatusServiceUnavailable)
			return
		}
		if err := read(w, st, FSPath(r.URL.Query().Get("path"))); err != nil {
			code := http.StatusInternalServerError
			switch {
			case errors.Is(err, fs.ErrNotExist):
				code = http.StatusNotFound
			case errors.Is(err, fs.ErrInvalid):
				code = http.StatusBadRequest
			}
			http.Error(w, err.Error(), code)
		}
	})
}

// Entry is a file or directory of the store as the admin API and
// shoalblk store ls/stat show it.
type Entry struct {
	Name    string    `json:"name"`
	Mode    string    `json:"mode"`
	Size    int64     `json:"size"`
	Ino     uint64    `json:"ino"`
	Gen     uint32    `json:"gen"`
	ModTime time.Time `json:"mtime"`
	IsDir   bool      `json:"dir"`
}

// EntryOf describes fi (inode and generation when it is the store's).
func EntryOf(fi fs.FileInfo) Entry {
	e := Entry{Name: fi.Name(), Mode: fi.Mode().String(), Size: fi.Size(), ModTime: fi.ModTime().UTC(), IsDir: fi.IsDir()}
	if st, ok := fi.Sys().(store.FileStat); ok {
		e.Ino, e.Gen = st.Ino, st.Gen
	}
	return e
}
