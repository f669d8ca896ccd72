package store

import (
	"context"
	"fmt"
	"testing"
)

// TestQuickStatMatchesLockedStat: the lock-free Stat (which reads only
// the parts of directory inodes and leaves a lookup needs) answers what
// the locked lookup answers for every name of a populated tree, and
// leaves to it what it cannot answer (missing names, a file used as a
// directory).
func TestQuickStatMatchesLockedStat(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{})
	s := openNode(t, dev, NewMemLocks(), "a", 0)
	defer s.Close()
	var names []string
	for d := 0; d < 3; d++ {
		dir := fmt.Sprintf("d%d/sub", d)
		if err := s.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		names = append(names, fmt.Sprintf("d%d", d), dir)
		for i := 0; i < 400; i += 40 {
			err := s.Update(context.Background(), func(tx *Tx) error {
				for j := i; j < i+40; j++ {
					if err := tx.WriteFile(fmt.Sprintf("%s/file-with-a-longer-name-%04d", dir, j), make([]byte, j), 0o644); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for j := i; j < i+40; j++ {
				names = append(names, fmt.Sprintf("%s/file-with-a-longer-name-%04d", dir, j))
			}
		}
	}
	names = append(names, ".")
	for _, name := range names {
		fi := s.quickStat(name, true)
		if fi == nil {
			t.Fatalf("quickStat(%q) did not answer", name)
		}
		var want *inode
		if err := s.View(context.Background(), func(tx *Tx) error {
			in, _, err := tx.resolve(name, Shared)
			want = in
			return err
		}); err != nil {
			t.Fatal(err)
		}
		got := fi.Sys().(FileStat)
		if got.Ino != want.Ino || got.Gen != want.Gen || fi.Size() != want.Size || fi.IsDir() != (want.Type == typeDir) {
			t.Fatalf("quickStat(%q) = ino %d gen %d size %d dir %v; locked: ino %d gen %d size %d type %d",
				name, got.Ino, got.Gen, fi.Size(), fi.IsDir(), want.Ino, want.Gen, want.Size, want.Type)
		}
	}
	for _, name := range []string{"nosuch", "d0/nosuch", "d0/sub/file-with-a-longer-name-0001/x", "d9/sub"} {
		if fi := s.quickStat(name, true); fi != nil {
			t.Fatalf("quickStat(%q) answered %v; want it left to the locked lookup", name, fi)
		}
	}
}

// TestQuickStatMemoFollowsChanges: a stat answered from this node's lock
// caches is remembered (the same answer is given again without decoding),
// and the remembered answer is never given once a block of its walk
// changed: a rewrite on this node, a rename over the file on this node, a
// rewrite and a rename over it on another node are each seen by the next
// stat, with the new identity and size.
func TestQuickStatMemoFollowsChanges(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{})
	locks := NewMemLocks()
	a := openNode(t, dev, locks, "a", 0)
	defer a.Close()
	b := openNode(t, dev, locks, "b", 1)
	defer b.Close()
	const name = "site/dir/page.html"
	if err := a.MkdirAll("site/dir", 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(s *Store, data string) {
		t.Helper()
		if err := s.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	replace := func(s *Store, data string) {
		t.Helper()
		if err := s.WriteFile(name+".new", []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Rename(name+".new", name); err != nil {
			t.Fatal(err)
		}
	}
	// stat checks a's lock-free stat against b's locked read of the file.
	// Sizes differ at each step: a remembered answer would show.
	stat := func(step string, size int) FileStat {
		t.Helper()
		fi, err := a.Stat(name)
		if err != nil {
			t.Fatalf("%s: stat: %v", step, err)
		}
		if fi.Size() != int64(size) {
			t.Fatalf("%s: stat size %d, want %d", step, fi.Size(), size)
		}
		return fi.Sys().(FileStat)
	}
	write(a, "one")
	if _, err := a.ReadFile(name); err != nil { // a holds the path's locks
		t.Fatal(err)
	}
	first := a.quickStat(name, true)
	if first == nil {
		t.Fatal("quickStat did not answer from the lock caches")
	}
	if again := a.quickStat(name, true); again != first {
		t.Fatal("a second quickStat of an unchanged path was not the remembered answer")
	}
	id := stat("unchanged", 3)

	write(a, "rewritten here")
	if got := stat("rewritten on this node", len("rewritten here")); got.Ino != id.Ino {
		t.Fatalf("rewritten in place on this node: inode %d, was %d", got.Ino, id.Ino)
	}

	replace(a, "renamed over here!")
	got := stat("renamed over on this node", len("renamed over here!"))
	if got.Ino == id.Ino {
		t.Fatalf("renamed over on this node: inode %d unchanged", got.Ino)
	}
	id = got
	a.quickStat(name, true) // remembered again

	write(b, "rewritten on the other node")
	stat("rewritten on the other node", len("rewritten on the other node"))
	if _, err := a.ReadFile(name); err != nil {
		t.Fatal(err)
	}
	a.quickStat(name, true)

	replace(b, "renamed over on the other node")
	got = stat("renamed over on the other node", len("renamed over on the other node"))
	if got.Ino == id.Ino {
		t.Fatalf("renamed over on the other node: inode %d unchanged", got.Ino)
	}
}
