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
// same time as another writes the same bytes). It returns how many files it
// copied; 0 when dir already had entries.
func SeedSite(ctx context.Context, st Store, dir string, src fs.FS) (int, error) {
	ents, err := fs.ReadDir(st, dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	if len(ents) > 0 {
		return 0, nil
	}
	n := 0
	err = fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := path.Join(dir, p)
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return st.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil // symlinks and devices are not part of a site
		}
		data, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		if err := st.Update(ctx, func(tx session.Tx) error { return tx.WriteFile(target, data, 0o644) }); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
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
