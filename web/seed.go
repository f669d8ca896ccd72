package web

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"

	"github.com/shoal-ha/shoal/web/session"
)

// SeedSite copies the tree src into dir of st when dir is empty or missing,
// one file per transaction (a whole-file replace: a second load writes the
// same bytes). A directory's own files are copied before its
// subdirectories, so the site's front pages (index.html at the top) are
// served within moments while the deeper trees still load. The marker
// dir+".seeding", beside dir and so never served, stands from the load's
// start to its end and names the incarnation loading: while that
// incarnation is live (mem.State), the others leave the load to it (the
// nodes of a cluster start at once and would otherwise each copy the whole
// site, moving the content directory's locks between them for as long);
// a load cut short (its node stopped or fenced) is resumed by the next
// SeedSite on any node. mem nil: every standing marker is taken as a load
// cut short. It returns how many files it copied; 0 when dir already had
// entries and no load was cut short, or another node is loading it.
func SeedSite(ctx context.Context, st Store, mem Membership, dir string, src fs.FS) (int, error) {
	ents, err := fs.ReadDir(st, dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	marker := path.Clean(dir) + ".seeding"
	_, merr := fs.Stat(st, marker)
	switch {
	case merr != nil && !errors.Is(merr, fs.ErrNotExist):
		return 0, merr
	case len(ents) > 0 && merr != nil:
		return 0, nil // a site is there, loaded whole or the operator's own
	}
	var self session.Owner
	if mem != nil {
		self = mem.Self()
	}
	claimed := false
	err = st.Update(ctx, func(tx session.Tx) error {
		claimed = false
		b, err := tx.ReadFile(marker)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err == nil && mem != nil {
			var m seedMarker
			if json.Unmarshal(b, &m) == nil && m.Loader != self && m.Loader.Node != "" && mem.State(m.Loader) == session.OwnerLive {
				return nil // another node is loading the site
			}
		}
		note, err := json.Marshal(seedMarker{Loader: self, Note: "the site is being loaded into " + dir + "; a load cut short is resumed at the next start"})
		if err != nil {
			return err
		}
		claimed = true
		return tx.WriteFile(marker, append(note, '\n'), 0o644)
	})
	if err != nil || !claimed {
		return 0, err
	}
	n := 0
	if err := seedDir(ctx, st, dir, src, ".", &n); err != nil {
		return n, err
	}
	err = st.Update(ctx, func(tx session.Tx) error {
		if err := tx.Remove(marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err // another node finished the same load first: fine
		}
		return nil
	})
	return n, err
}

// seedMarker is the content of a site load's marker file.
type seedMarker struct {
	// Loader is the incarnation loading the site.
	Loader session.Owner `json:"loader"`
	Note   string        `json:"note"`
}

// seedDir copies the regular files of src's directory p into dir, then
// each subdirectory in turn; symlinks and devices are not part of a site.
func seedDir(ctx context.Context, st Store, dir string, src fs.FS, p string, n *int) error {
	ents, err := fs.ReadDir(src, p)
	if err != nil {
		return err
	}
	if err := st.MkdirAll(path.Join(dir, p), 0o755); err != nil {
		return err
	}
	for _, d := range ents {
		if !d.Type().IsRegular() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		name := path.Join(p, d.Name())
		data, err := fs.ReadFile(src, name)
		if err != nil {
			return err
		}
		target := path.Join(dir, name)
		if err := st.Update(ctx, func(tx session.Tx) error { return tx.WriteFile(target, data, 0o644) }); err != nil {
			return err
		}
		*n++
	}
	for _, d := range ents {
		if d.IsDir() {
			if err := seedDir(ctx, st, dir, src, path.Join(p, d.Name()), n); err != nil {
				return err
			}
		}
	}
	return nil
}

func seedFrom(ctx context.Context, st Store, mem Membership, cfg Config) (int, error) {
	if cfg.SeedDir == "" {
		return 0, nil
	}
	if err := st.MkdirAll(cfg.ContentRoot, 0o755); err != nil {
		return 0, err
	}
	return SeedSite(ctx, st, mem, cfg.ContentRoot, os.DirFS(cfg.SeedDir))
}
