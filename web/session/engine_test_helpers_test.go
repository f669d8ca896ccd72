package session_test

import (
	"io/fs"
)

type fsReader struct{ fsys fs.FS }

func (r fsReader) ReadFile(name string) ([]byte, error) { return fs.ReadFile(r.fsys, name) }
