package web

import (
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/shoal-ha/shoal/store"
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
// the shards apart when st can (ApartMaker) and has the room, plainly
// otherwise. Existing ones are left as they are.
func makeLayoutDirs(st Store, l session.Layout) error {
	am, apart := st.(ApartMaker)
	// The shards found made, from one listing of their parent (under the
	// parent's lock alone): a stat of each would take each shard's lock
	// from the node that keeps it.
	made := map[string]map[string]bool{}
	for _, dir := range l.Dirs() {
		parent := path.Dir(dir)
		if !apart || (parent != l.Sessions && parent != l.Keys) {
			if err := st.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("web: making %s: %w", dir, err)
			}
			continue
		}
		if made[parent] == nil {
			ents, err := fs.ReadDir(st, parent)
			if err != nil {
				return fmt.Errorf("web: listing %s: %w", parent, err)
			}
			made[parent] = map[string]bool{}
			for _, e := range ents {
				made[parent][e.Name()] = e.IsDir()
			}
		}
		if made[parent][path.Base(dir)] {
			continue
		}
		err := am.MkdirApart(dir, 0o700)
		if errors.Is(err, store.ErrNoSpace) {
			// No wholly free region left (a full or small store): the
			// shard works anywhere, only its lock's region is shared.
			err = st.MkdirAll(dir, 0o700)
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("web: making %s: %w", dir, err)
		}
	}
	return nil
}

// ExclusiveHolder is a Store that tells whether this node keeps the lock
// of a file or directory exclusively, cached (store.Store.HoldsExclusive):
// a hint that may be wrong the next moment.
type ExclusiveHolder interface {
	HoldsExclusive(name string) bool
}

// beginLane is the group commit lane of the Begin step of a request with
// idempotency key key: the key's shard directory, whose lock the step
// takes exclusively, kept apart from other steps while the lock may have
// to come from another node; the common lane when this node holds it
// already (one node alone, or a shard it has kept), where the step waits
// for nothing and shares a transaction, and its flush, with any other.
func (a *API) beginLane(key string) string {
	shard := path.Dir(a.cfg.Layout.KeyFile(key))
	if h, ok := a.st.(ExclusiveHolder); ok && h.HoldsExclusive(shard) {
		return ""
	}
	return shard
}
