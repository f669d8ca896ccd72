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
		fi := s.quickStat(name)
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
		if fi := s.quickStat(name); fi != nil {
			t.Fatalf("quickStat(%q) answered %v; want it left to the locked lookup", name, fi)
		}
	}
}
