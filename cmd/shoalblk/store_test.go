package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/store"
)

// TestStoreCommands: mkstore lays a store on a formatted volume and refuses
// to lay a second one without --overwrite; store check finds it clean;
// the root directory's inode damaged on both legs makes store check name
// the inode, path and block and exit non-zero.
func TestStoreCommands(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	if _, err := run(t, bin, "format", "--size", "64M", "--region-size", "1M", "--slots", "4", a, b); err != nil {
		t.Fatal(err)
	}
	out, err := runStdout(t, bin, "mkstore", "--json", a, b)
	if err != nil {
		t.Fatal(err)
	}
	var sb store.Superblock
	if err := json.Unmarshal([]byte(out), &sb); err != nil || sb.Slots != 4 || sb.Root == 0 {
		t.Fatalf("mkstore printed %q (%v)", out, err)
	}
	if out, err := run(t, bin, "mkstore", a, b); err == nil || !strings.Contains(out, "--overwrite") {
		t.Fatalf("a second mkstore: %v\n%s", err, out)
	}
	if out, err := run(t, bin, "store", "check", a, b); err != nil || !strings.Contains(out, "0 problems") {
		t.Fatalf("check of a new store: %v\n%s", err, out)
	}
	// Damage the root directory's inode block on both legs.
	ctx := context.Background()
	for _, leg := range []string{a, b} {
		d, err := blockdev.OpenFile(leg, blockdev.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		msb, err := mirror.ReadSuperblock(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		off := msb.Geometry.DataOffset + int64(sb.Root)*store.BlockSize
		blk := make([]byte, store.BlockSize)
		if err := d.ReadAt(ctx, blk, off); err != nil {
			t.Fatal(err)
		}
		for i := 100; i < 200; i++ {
			blk[i] ^= 0xff
		}
		if err := d.WriteAt(ctx, blk, off); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	out, err = run(t, bin, "store", "check", a, b)
	if err == nil {
		t.Fatalf("check of a damaged store succeeded:\n%s", out)
	}
	want := []string{"problem:", "inode " + itoa(sb.Root), "block " + itoa(sb.Root), "problems found"}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("check output does not say %q:\n%s", w, out)
		}
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
