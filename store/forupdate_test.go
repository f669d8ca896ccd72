package store

import (
	"context"
	"errors"
	"io/fs"
	"testing"
)

// A transaction that reads two files and rewrites them (a web session and
// its idempotency key) runs its function once when it reads them for
// update; read PR, each directory and file lock converted up on the write
// starts it over.
func TestReadForUpdateRunsOnce(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	s := openNode(t, dev, lm, "a", 0)
	defer s.Close()
	for _, d := range []string{"web/sessions", "web/keys"} {
		if err := s.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := []string{"web/sessions/s1", "web/keys/k1"}
	for _, f := range files {
		if err := s.WriteFile(f, []byte("v0"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	update := func(read func(tx *Tx, name string) ([]byte, error), v string) int {
		t.Helper()
		// Cached PR grants, as after serving reads.
		for _, f := range files {
			if _, err := s.ReadFile(f); err != nil {
				t.Fatal(err)
			}
		}
		runs := 0
		err := s.Update(context.Background(), func(tx *Tx) error {
			runs++
			for _, f := range files {
				if _, err := read(tx, f); err != nil {
					return err
				}
			}
			for _, f := range files {
				if err := tx.WriteFile(f, []byte(v), 0o600); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if got, err := s.ReadFile(f); err != nil || string(got) != v {
				t.Fatalf("%s = %q (%v), want %q", f, got, err, v)
			}
		}
		return runs
	}
	plain := update((*Tx).ReadFile, "v1")
	forUpdate := update((*Tx).ReadFileForUpdate, "v2")
	if forUpdate != 1 {
		t.Fatalf("reading for update, the transaction ran %d times, want 1", forUpdate)
	}
	if plain <= 1 {
		t.Fatalf("reading PR, the transaction ran %d times: this test no longer shows the restarts it avoids", plain)
	}
	t.Logf("runs of the update function: read PR %d, read for update %d", plain, forUpdate)

	// A missing file: fs.ErrNotExist, and the create that follows needs
	// no start over either.
	runs := 0
	err := s.Update(context.Background(), func(tx *Tx) error {
		runs++
		if _, err := tx.ReadFileForUpdate("web/keys/k2"); !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return tx.WriteFile("web/keys/k2", []byte("new"), 0o600)
	})
	if err != nil || runs != 1 {
		t.Fatalf("create after a read for update of a missing file: %v after %d runs, want nil after 1", err, runs)
	}
	if err := s.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.ReadFileForUpdate("web")
		return err
	}); !errors.Is(err, ErrIsDir) {
		t.Fatalf("read for update of a directory: %v, want ErrIsDir", err)
	}
}
