package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/testutil"
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
	mkdirs(t, s, "web/sessions", "web/keys")
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

	// A missing file read for create: fs.ErrNotExist with the directory
	// held EX, and the create that follows needs no start over. Read for
	// update (directory PR), the create starts over once and still
	// commits.
	for _, c := range []struct {
		name string
		read func(tx *Tx, name string) ([]byte, error)
		runs int
	}{{"web/keys/k2", (*Tx).ReadFileForCreate, 1}, {"web/keys/k3", (*Tx).ReadFileForUpdate, 2}} {
		// A new inode's lock still being asked for ahead (by the create
		// before) would make the create start over once more.
		waitLocksAhead(t, s)
		runs := 0
		var why []string
		s.restarted = func(r *retryError) { why = append(why, r.Error()) }
		err := s.Update(context.Background(), func(tx *Tx) error {
			runs++
			if _, err := c.read(tx, c.name); !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return tx.WriteFile(c.name, []byte("new"), 0o600)
		})
		if err != nil || runs != c.runs {
			t.Fatalf("create %s after a read of the missing file: %v after %d runs, want nil after %d; started over for: %q", c.name, err, runs, c.runs, why)
		}
		s.restarted = nil
		if got, err := s.ReadFile(c.name); err != nil || string(got) != "new" {
			t.Fatalf("%s = %q (%v) after its create", c.name, got, err)
		}
	}
	if err := s.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.ReadFileForUpdate("web")
		return err
	}); !errors.Is(err, ErrIsDir) {
		t.Fatalf("read for update of a directory: %v, want ErrIsDir", err)
	}
}

// waitLocksAhead waits until none of s's inode locks asked for ahead
// (lockAhead) is still being asked for: those requests run on their own
// and, on a loaded machine, land at any time after the create that made
// them.
func waitLocksAhead(t *testing.T, s *Store) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "locks asked ahead", func() bool {
		s.aheadMu.Lock()
		defer s.aheadMu.Unlock()
		return len(s.ahead) == 0
	})
}

// countingLocker counts the grants a node asks of the lock manager, per
// lock name.
type countingLocker struct {
	Locker
	mu    sync.Mutex
	asked map[string]int
}

func (c *countingLocker) Lock(ctx context.Context, name string, mode LockMode, opts LockOptions) (Lock, error) {
	c.mu.Lock()
	c.asked[name]++
	c.mu.Unlock()
	return c.Locker.Lock(ctx, name, mode, opts)
}

func (c *countingLocker) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked[name]
}

// Two nodes rewriting different files of one directory, turn about, keep
// their grant of the directory's lock: a rewrite takes the directory PR
// (its entries do not change), so neither node asks for it again once it
// has it, and neither gives it up to the other.
func TestRewritesInOneDirectoryKeepItsLock(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	var nodes []*Store
	var lockers []*countingLocker
	for i, name := range []string{"a", "b"} {
		cl := &countingLocker{Locker: lm.Node(name), asked: map[string]int{}}
		lockers = append(lockers, cl)
		nodes = append(nodes, openNode(t, dev, lm, name, i, func(c *Config) { c.Locks = cl }))
	}
	if err := nodes[0].MkdirAll("web/sessions", 0o755); err != nil {
		t.Fatal(err)
	}
	files := []string{"web/sessions/s0", "web/sessions/s1"}
	for i, s := range nodes {
		if err := s.WriteFile(files[i], []byte("v0"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := nodes[0].Stat("web/sessions")
	if err != nil {
		t.Fatal(err)
	}
	dirLock := fmt.Sprintf("%s/i/%x", nodes[0].lockPrefix, fi.Sys().(FileStat).Ino)
	rewrite := func(i, round int) {
		t.Helper()
		err := nodes[i].Update(context.Background(), func(tx *Tx) error {
			b, err := tx.ReadFileForUpdate(files[i])
			if err != nil {
				return err
			}
			return tx.WriteFile(files[i], append(b, byte('a'+round%26)), 0o600)
		})
		if err != nil {
			t.Fatalf("node %d round %d: %v", i, round, err)
		}
	}
	// Each node's first rewrite may ask for the directory (PR).
	rewrite(0, 0)
	rewrite(1, 0)
	before := []int{lockers[0].count(dirLock), lockers[1].count(dirLock)}
	const rounds = 20
	for r := 1; r <= rounds; r++ {
		rewrite(0, r)
		rewrite(1, r)
	}
	for i := range nodes {
		if n := lockers[i].count(dirLock) - before[i]; n != 0 {
			t.Errorf("node %d asked for the directory's lock %s %d times in %d rewrites of its own file, want 0", i, dirLock, n, rounds)
		}
		got, err := nodes[1-i].ReadFile(files[i])
		if err != nil || len(got) != 3+rounds {
			t.Fatalf("%s read on the other node: %q (%v), want %d bytes", files[i], got, err, 3+rounds)
		}
	}
	// A create in the directory still takes it EX, from both nodes.
	if err := nodes[1].WriteFile("web/sessions/s2", []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := nodes[0].ReadFile("web/sessions/s2"); err != nil || string(got) != "new" {
		t.Fatalf("created file read on the other node: %q (%v)", got, err)
	}
	for _, s := range nodes {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkClean(t, dev)
}

// A file rewritten by its identity (ReadFileOf, WriteFileOf) takes none
// of its directory's locks: node a rewrites its file while node b makes
// files in the same directory, and a never asks for the directory again.
func TestRewriteByIdentityLeavesTheDirectory(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	var nodes []*Store
	var lockers []*countingLocker
	for i, name := range []string{"a", "b"} {
		cl := &countingLocker{Locker: lm.Node(name), asked: map[string]int{}}
		lockers = append(lockers, cl)
		nodes = append(nodes, openNode(t, dev, lm, name, i, func(c *Config) { c.Locks = cl }))
	}
	a, b := nodes[0], nodes[1]
	if err := a.MkdirAll("web/keys", 0o755); err != nil {
		t.Fatal(err)
	}
	var id FileStat
	err := a.Update(context.Background(), func(tx *Tx) error {
		if err := tx.WriteFile("web/keys/mine", []byte("v0"), 0o600); err != nil {
			return err
		}
		fi, err := tx.Stat("web/keys/mine")
		if err != nil {
			return err
		}
		id = fi.Sys().(FileStat)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := a.Stat("web/keys")
	if err != nil {
		t.Fatal(err)
	}
	dirLock := fmt.Sprintf("%s/i/%x", a.lockPrefix, fi.Sys().(FileStat).Ino)
	// The creates asked ahead for the locks of the next free inodes, the
	// directory's among them (lockAhead, before it was made): those
	// requests run on their own and, on a loaded machine, can land after
	// the count below is taken.
	waitLocksAhead(t, a)
	before := lockers[0].count(dirLock)
	for r := range 10 {
		if err := b.WriteFile(fmt.Sprintf("web/keys/theirs-%d", r), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := a.Update(context.Background(), func(tx *Tx) error {
			got, err := tx.ReadFileOf(id)
			if err != nil {
				return err
			}
			return tx.WriteFileOf(id, append(got, 'x'))
		})
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	if n := lockers[0].count(dirLock) - before; n != 0 {
		t.Fatalf("node a asked for the directory's lock %d times rewriting its file by identity, want 0", n)
	}
	if got, err := b.ReadFile("web/keys/mine"); err != nil || string(got) != "v0xxxxxxxxxx" {
		t.Fatalf("read by path on node b: %q %v", got, err)
	}
	// Removed: fs.ErrNotExist, by identity. (The file that will take its
	// block for data is made first: its inode would take the block.)
	fill, err := a.OpenFile("web/fill", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Remove("web/keys/mine"); err != nil {
		t.Fatal(err)
	}
	err = a.Update(context.Background(), func(tx *Tx) error {
		_, err := tx.ReadFileOf(id)
		return err
	})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read of a removed file by identity: %v, want fs.ErrNotExist", err)
	}
	// Its block reused for another file's data, which has no block
	// header: still fs.ErrNotExist by identity, not ErrCorrupt. One file
	// grows, to the blocks kept for new inodes too (lockAhead), which go
	// to data last.
	raw := make([]byte, BlockSize)
	chunk := bytes.Repeat([]byte{0xa5}, 32*BlockSize)
	for i := 0; ; i++ {
		if err := dev.ReadAt(context.Background(), raw, int64(id.Ino)*BlockSize); err != nil {
			t.Fatal(err)
		}
		if _, err := openBlock(raw, id.Ino, 0); err != nil {
			break
		}
		_, err := fill.Write(chunk)
		if err == nil {
			err = fill.Sync()
		}
		switch {
		case errors.Is(err, ErrNoSpace) && len(chunk) > BlockSize:
			// The refused chunk stays the handle's to write: start
			// over with a new one, block by block.
			fill.Close()
			if fill, err = a.OpenFile("web/fill", os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
				t.Fatal(err)
			}
			chunk = chunk[:BlockSize]
		case err != nil:
			t.Fatalf("block %d not reused for file data after %d writes: %v", id.Ino, i, err)
		}
	}
	if err := fill.Close(); err != nil {
		t.Fatal(err)
	}
	// A node that kept no image of the block reads it from the volume
	// (the others may still answer from the removed inode's image).
	c := openNode(t, dev, lm, "c", 2)
	nodes = append(nodes, c)
	for _, s := range nodes {
		err = s.Update(context.Background(), func(tx *Tx) error {
			_, err := tx.ReadFileOf(id)
			return err
		})
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("read by identity of a removed file whose block holds file data now: %v, want fs.ErrNotExist", err)
		}
	}
	if err := a.Update(context.Background(), func(tx *Tx) error {
		return tx.WriteFileOf(FileStat{Ino: 1, Gen: 1}, nil)
	}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("write of an identity outside the store: %v, want fs.ErrNotExist", err)
	}
	for _, s := range nodes {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkClean(t, dev)
}

// HoldsExclusive follows the grant of a directory's lock: the node that
// made a file in it last holds it, the other not.
func TestHoldsExclusiveFollowsTheGrant(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	if err := a.MkdirAll("web/keys/0", 0o755); err != nil {
		t.Fatal(err)
	}
	if !a.HoldsExclusive("web/keys/0") {
		t.Fatal("node a made the directory and does not hold its lock EX")
	}
	if b.HoldsExclusive("web/keys/0") || b.HoldsExclusive("web/keys/missing") {
		t.Fatal("node b holds what it never locked")
	}
	if err := b.WriteFile("web/keys/0/k", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !b.HoldsExclusive("web/keys/0") {
		t.Fatal("node b made a file in the directory and does not hold its lock EX")
	}
	testutil.WaitFor(t, 10*time.Second, "node a to give the directory's lock up", func() bool { return !a.HoldsExclusive("web/keys/0") })
	for _, s := range []*Store{a, b} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if a.HoldsExclusive("web/keys/0") {
		t.Fatal("a closed store holds a lock")
	}
}
