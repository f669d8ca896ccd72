package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/shoal-ha/shoal/store"
)

// fsys is what the rows do, on the store and on the peer file system.
type fsys interface {
	// createSync creates name, writes data, syncs and closes it.
	createSync(name string, data []byte) error
	mkdirAll(name string) error
	// populate creates n empty files name/e00000... (setup, not timed).
	populate(dir string, n int) error
	readDir(name string) ([]string, error)
	// readDirEntries lists name as fs.ReadDir does (whose Info reads
	// each entry's inode: os.ReadDir's does an lstat).
	readDirEntries(name string) ([]fs.DirEntry, error)
	stat(name string) error
	remove(name string) error
	// writeSeq writes total bytes to a new file in len(chunk) writes, then
	// syncs; readSeq reads it back cold in len(buf) reads.
	writeSeq(name string, total int64, chunk []byte) error
	readSeq(name string, buf []byte) (int64, error)
}

type storeFS struct{ st *store.Store }

func (s storeFS) createSync(name string, data []byte) error {
	f, err := s.st.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s storeFS) mkdirAll(name string) error { return s.st.MkdirAll(name, 0o755) }

func (s storeFS) populate(dir string, n int) error {
	if err := s.st.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	const batch = 50 // a transaction must fit the demo volume's 1 MiB journals
	for i := 0; i < n; i += batch {
		err := s.st.Update(context.Background(), func(tx *store.Tx) error {
			for j := i; j < min(n, i+batch); j++ {
				if err := tx.WriteFile(fmt.Sprintf("%s/e%05d", dir, j), nil, 0o644); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (s storeFS) readDir(name string) ([]string, error) {
	es, err := s.st.ReadDir(name)
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Name()
	}
	return out, err
}

func (s storeFS) readDirEntries(name string) ([]fs.DirEntry, error) { return s.st.ReadDir(name) }

func (s storeFS) stat(name string) error {
	_, err := s.st.Stat(name)
	return err
}

func (s storeFS) remove(name string) error { return s.st.Remove(name) }

func (s storeFS) writeSeq(name string, total int64, chunk []byte) error {
	f, err := s.st.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for off := int64(0); off < total; off += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s storeFS) readSeq(name string, buf []byte) (int64, error) {
	f, err := s.st.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return readAll(f, buf)
}

func readAll(r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// hostFS is a directory of the peer file system.
type hostFS struct{ root string }

func (h hostFS) path(name string) string { return filepath.Join(h.root, name) }

func (h hostFS) createSync(name string, data []byte) error {
	f, err := os.OpenFile(h.path(name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (h hostFS) mkdirAll(name string) error { return os.MkdirAll(h.path(name), 0o755) }

func (h hostFS) populate(dir string, n int) error {
	if err := os.MkdirAll(h.path(dir), 0o755); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(h.path(fmt.Sprintf("%s/e%05d", dir, i)), nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (h hostFS) readDir(name string) ([]string, error) {
	es, err := os.ReadDir(h.path(name))
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Name()
	}
	return out, err
}

func (h hostFS) readDirEntries(name string) ([]fs.DirEntry, error) { return os.ReadDir(h.path(name)) }

func (h hostFS) stat(name string) error {
	_, err := os.Stat(h.path(name))
	return err
}

func (h hostFS) remove(name string) error { return os.Remove(h.path(name)) }

func (h hostFS) writeSeq(name string, total int64, chunk []byte) error {
	f, err := os.OpenFile(h.path(name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for off := int64(0); off < total; off += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (h hostFS) readSeq(name string, buf []byte) (int64, error) {
	if err := dropCache(h.path(name)); err != nil {
		return 0, err
	}
	f, err := os.Open(h.path(name))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return readAll(f, buf)
}
