package web

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"

	"github.com/shoal-ha/shoal/web/session"
)

// SeedSite copies the tree src into dir of st when dir is empty or missing,
// one file per transaction (a whole-file replace, so a node that seeds at the
// same time as another writes the same bytes). A directory's own files are
// copied before its subdirectories, so the site's front pages (index.html
// at the top) are served within moments while the deeper trees still load.
// A load cut short (its node stopped or fenced) is resumed by the next
// SeedSite on any node: the marker dir+".seeding", beside dir and so never
// served, stands from the load's start to its end. It returns how many
// files it copied; 0 when dir already had entries and no load was under
// way.
func SeedSite(ctx context.Context, st Store, dir string, src fs.FS) (int, error) {
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
	note := []byte("the site is being loaded into " + dir + "; a load cut short is resumed at the next start\n")
	if err := st.Update(ctx, func(tx session.Tx) error { return tx.WriteFile(marker, note, 0o644) }); err != nil {
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

func seedFrom(ctx context.Context, st Store, cfg Config) (int, error) {
	if cfg.SeedDir == "" {
		return 0, nil
	}
	if err := st.MkdirAll(cfg.ContentRoot, 0o755); err != nil {
		return 0, err
	}
	return SeedSite(ctx, st, cfg.ContentRoot, os.DirFS(cfg.SeedDir))
}
