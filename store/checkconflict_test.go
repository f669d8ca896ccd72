package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestOnlineCheckBesideManyHeldLocks: another node has just created many
// files in one directory and still holds their inode locks (cached
// exclusively). The online check of that directory takes every child's
// lock shared in one transaction; each lock it has to ask back must not
// make it give up (ErrConflict) however many there are, and it finds
// nothing wrong.
func TestOnlineCheckBesideManyHeldLocks(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{Slots: 3})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	defer a.Close()
	defer b.Close()
	// The files are made first and moved into the directory made after
	// them: their inodes come before the directory's in lock order, so
	// the check can only try for their locks under the directory's.
	if err := b.MkdirAll("new", 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 200
	for i := 0; i < files; i++ {
		if err := b.WriteFile(fmt.Sprintf("new/f%03d", i), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.MkdirAll("busy", 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < files; i++ {
		if err := b.Rename(fmt.Sprintf("new/f%03d", i), fmt.Sprintf("busy/f%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := a.Check(ctx)
	if err != nil {
		t.Fatalf("online check beside %d inode locks another node holds: %v", files, err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if rep.Files != files {
		t.Fatalf("check counted %d files; want %d", rep.Files, files)
	}
}
