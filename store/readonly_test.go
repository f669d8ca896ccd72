package store

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"testing"
)

func TestReadOnlyAndJournalDump(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	a.MkdirAll("d", 0o755)
	a.MkdirAll("intents", 0o755)
	a.WriteFile("d/f", []byte("data"), 0o644)
	logIntents(t, a, "j1")
	crashed := dev.CrashClone(blockdevKeepAll())
	// Online: a read-only handle beside a live node, under the same locks.
	ro, err := OpenReadOnly(context.Background(), dev, lm.Node("ro"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ro.ReadFile("d/f"); err != nil || string(got) != "data" {
		t.Fatalf("read-only read: %q %v", got, err)
	}
	if err := ro.Mkdir("x", 0o755); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("mkdir through a read-only handle: %v", err)
	}
	if err := a.WriteFile("d/f", []byte("newer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := ro.ReadFile("d/f"); string(got) != "newer" {
		t.Fatalf("read-only handle missed a change: %q", got)
	}
	rep, err := ro.Check(context.Background())
	if err != nil || rep.Err() != nil {
		t.Fatalf("online check through a read-only handle: %v %v", err, rep.Err())
	}
	ro.Close()
	a.Close()
	// The journal of the crashed copy: the transactions and the pending
	// record.
	info, txs, err := ReadJournal(context.Background(), crashed, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(txs) == 0 || len(info.Pending) != 1 || string(info.Pending[0].Payload) != "j1" || info.Owner != "" {
		t.Fatalf("journal dump: %+v, %d transactions", info, len(txs))
	}
	// Offline handle on the crashed copy: not replayed, so the last
	// transactions' changes may not be seen, but reading works.
	off, err := OpenReadOnly(context.Background(), dev, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := off.Stat("d"); err != nil {
		t.Fatal(err)
	}
	off.Close()
}

// A metadata block damaged on the only leg: reading that file fails with
// an error naming the block, everything else works, the check names inode
// and path.
func TestCorruptInodeNamed(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	s := openNode(t, dev, lm, "a", 0)
	s.MkdirAll("site/img", 0o755)
	s.WriteFile("site/good.html", []byte("good"), 0o644)
	s.WriteFile("site/img/bad.png", bytes.Repeat([]byte{7}, 9000), 0o644)
	fi, err := s.Stat("site/img/bad.png")
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(FileStat).Ino
	s.Close()
	// Damage the inode block in place (one byte of its body).
	b := dev.Peek(int64(ino)*BlockSize+200, 1)
	dev.Poke(int64(ino)*BlockSize+200, []byte{b[0] ^ 0xff})
	s = openNode(t, dev, NewMemLocks(), "b", 1)
	defer s.Close()
	_, err = s.ReadFile("site/img/bad.png")
	var pe *fs.PathError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &pe) || pe.Path != "site/img/bad.png" {
		t.Fatalf("reading the damaged file: %v", err)
	}
	if got, err := s.ReadFile("site/good.html"); err != nil || string(got) != "good" {
		t.Fatalf("undamaged file: %q %v", got, err)
	}
	if _, err := s.ReadDir("site/img"); err != nil {
		t.Fatalf("listing the directory: %v", err)
	}
	if err := s.WriteFile("site/new", []byte("still writable"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rep.Problems {
		if p.Ino == ino && p.Path == "/site/img/bad.png" && p.Block == ino {
			found = true
		}
	}
	if !found {
		t.Fatalf("check did not name inode %d at /site/img/bad.png: %v", ino, rep.Problems)
	}
}
