package session_test

import (
	"errors"
	"io/fs"
)

type fsReader struct{ fsys fs.FS }

func (r fsReader) ReadFile(name string) ([]byte, error) { return fs.ReadFile(r.fsys, name) }

func keyNames(fsys fs.FS, dir string) ([]string, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}
