package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/store"
)

// inodeOf looks up the inode of name in the store on legs (read-only).
func inodeOf(t *testing.T, legs []string, name string) uint64 {
	t.Helper()
	ctx := context.Background()
	cfg := mirror.DefaultConfig(mirror.NoSlot)
	cfg.ReadOnly = true
	v := openTestVolume(t, legs, cfg)
	defer v.Close()
	st, err := store.OpenReadOnly(ctx, v, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fi, err := st.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(store.FileStat).Ino
}

// damageBlock flips bytes of store block blk on leg.
func damageBlock(t *testing.T, leg string, blk uint64) {
	t.Helper()
	ctx := context.Background()
	d, err := blockdev.OpenFile(leg, blockdev.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	msb, err := mirror.ReadSuperblock(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	off := msb.Geometry.DataOffset + int64(blk)*store.BlockSize
	b := make([]byte, store.BlockSize)
	if err := d.ReadAt(ctx, b, off); err != nil {
		t.Fatal(err)
	}
	b[300] ^= 0xff
	if err := d.WriteAt(ctx, b, off); err != nil {
		t.Fatal(err)
	}
}

// TestStoreRepairCommand: store check --repair refuses a volume a node has
// open, repairs a file inode damaged on both legs (the entry goes, the
// repair names inode, path and block, exit 1) and one damaged on one leg
// (rewritten from the other, the file intact), after which check is
// clean and a second repair changes nothing (exit 0).
func TestStoreRepairCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	legs := []string{a, b}
	if _, _, code := runInProcess(t, "format", "--size", "32M", "--region-size", "1M", "--slots", "2", a, b); code != 0 {
		t.Fatal("format failed")
	}
	if _, _, code := runInProcess(t, "mkstore", a, b); code != 0 {
		t.Fatal("mkstore failed")
	}
	fillStore(t, legs, map[string]string{"site/a.html": strings.Repeat("a", 5000), "site/b.html": "bbb", "site/c.html": "ccc"})
	inoA, inoB := inodeOf(t, legs, "site/a.html"), inodeOf(t, legs, "site/b.html")

	// A node has the volume open: refused.
	v := openTestVolume(t, legs, mirror.FastConfig(1))
	_, errOut, code := runInProcess(t, "store", "check", "--repair", a, b)
	v.Close()
	if code != exitOperational || !strings.Contains(errOut, "--force-while-open") || !strings.Contains(errOut, "[1]") {
		t.Fatalf("repair of an open volume: exit %d, %q", code, errOut)
	}

	if _, errOut, code := runInProcess(t, "store", "check", "--repair", "--online", a, b); code == 0 || !strings.Contains(errOut, "offline only") {
		t.Fatalf("repair --online: exit %d, %q", code, errOut)
	}
	damageBlock(t, a, inoB)
	damageBlock(t, b, inoB)
	damageBlock(t, a, inoA)
	if _, _, code := runInProcess(t, "store", "check", a, b); code == 0 {
		t.Fatal("check of the damaged store found nothing")
	}
	out, _, code := runInProcess(t, "store", "check", "--repair", a, b)
	if code != exitRepaired {
		t.Fatalf("repair: exit %d, want %d", code, exitRepaired)
	}
	for _, w := range []string{"repaired: /site/b.html: inode " + itoa(inoB) + ": block " + itoa(inoB) + ": entry (in directory leaf",
		"repaired: /site/a.html: inode " + itoa(inoA) + ": block " + itoa(inoA) + ": metadata block damaged on 1 of 2 copies: rewritten from a good copy",
		"note: journal of slot 0 holds 1 records", "through slot 1", "0 problems left"} {
		if !strings.Contains(out, w) {
			t.Fatalf("repair output lacks %q", w)
		}
	}
	if _, _, code := runInProcess(t, "store", "check", a, b); code != 0 {
		t.Fatal("check after the repair is not clean")
	}
	got, _, code := runInProcess(t, "store", "cat", "site/a.html", a, b)
	if code != 0 || got != strings.Repeat("a", 5000) {
		t.Fatalf("site/a.html after the repair: exit %d, %d bytes", code, len(got))
	}
	out, _, code = runInProcess(t, "store", "check", "--repair", "--json", a, b)
	var rep store.RepairReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Repairs) != 0 || len(rep.Left) != 0 {
		t.Fatalf("second repair: exit %d, %s", code, out)
	}
}
