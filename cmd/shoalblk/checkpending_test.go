package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// A node that dies holding a region it wrote leaves the region marked and
// its checksums not written back: check without --lock-dir prints those
// blocks as pending recovery and exits 0; a block damaged in a region
// nobody marked still fails it.
func TestCheckTellsPendingFromDamage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	if _, _, code := runInProcess(t, "format", "--size", "4M", "--region-size", "64K", "--slots", "2", a, b); code != 0 {
		t.Fatalf("format: exit %d", code)
	}
	cfg := mirror.DefaultConfig(0)
	cfg.Logger = testlog.New(t, "node")
	cfg.Locker = mirror.NewLocalLocker() // holds its regions: checksums cached
	var legs []blockdev.Device
	for _, p := range []string{a, b} {
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		legs = append(legs, d)
	}
	cfg.Legs = legs
	v, err := mirror.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Stopped when the test ends: its background work, failing on the
	// closed legs, logs until then.
	defer v.Close()
	if err := v.WriteAt(ctx, bytes.Repeat([]byte{0xab}, 8192), 64<<10); err != nil {
		t.Fatal(err)
	}
	// The node dies: its legs close under it, nothing written back.
	for _, d := range legs {
		d.Close()
	}
	out, _, code := runInProcess(t, "check", a, b)
	if code != 0 || !strings.Contains(out, "pending: ") || !strings.Contains(out, "0 problems, ") || strings.Contains(out, "problem: ") {
		t.Fatalf("check of a dead node's marked region: exit %d\n%s", code, out)
	}
	// Damage in region 3, which nobody marked, on leg b.
	d, err := blockdev.OpenFile(b, blockdev.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := mirror.ReadSuperblock(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{0x01}, 4096), sb.Geometry.DataOffset+3*(64<<10)); err != nil {
		t.Fatal(err)
	}
	d.Close()
	out, _, code = runInProcess(t, "check", a, b)
	if code != 1 || !strings.Contains(out, "problem: leg 1 region 3 ") {
		t.Fatalf("check of damage in an unmarked region: exit %d\n%s", code, out)
	}
}
