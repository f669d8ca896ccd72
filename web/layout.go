package web

import (
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/shoal-ha/shoal/web/session"
)

// ApartMaker is a Store that can make a directory whose inode lies in a
// region of the volume of its own (store.Store.MkdirApart). Every node
// creates files in the layout's shard directories, and each create
// rewrites the directory's inode: side by side, those inodes would share
// one region of the mirror and its checksum-area lock, which would go
// from node to node at nearly every request. Stores without it get the
// shards made plainly.
type ApartMaker interface {
	MkdirApart(name string, perm fs.FileMode) error
}

// makeLayoutDirs makes the directories of layout l in st (Layout.Dirs),
// the shards apart when st can (ApartMaker). Existing ones are left as
// they are.
func makeLayoutDirs(st Store, l session.Layout) error {
	am, apart := st.(ApartMaker)
	for _, dir := range l.Dirs() {
		parent := path.Dir(dir)
		if !apart || (parent != l.Sessions && parent != l.Keys) {
			if err := st.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("web: making %s: %w", dir, err)
			}
			continue
		}
		if fi, err := fs.Stat(st, dir); err == nil && fi.IsDir() {
			continue
		}
		if err := am.MkdirApart(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("web: making %s: %w", dir, err)
		}
	}
	return nil
}
