package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "1M": 1 << 20, "64k": 64 << 10, "2G": 2 << 30, "1MiB": 1 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1Q", "99999999999T"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

// TestRefusals: wrong sizes, missing files, foreign superblocks and
// dropping the last in-sync leg get clear errors and change nothing.
func TestRefusals(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	expectFail := func(want string, args ...string) {
		t.Helper()
		out, err := run(t, bin, args...)
		if err == nil {
			t.Fatalf("shoalblk %v succeeded", args)
		}
		if !strings.Contains(out, want) {
			t.Fatalf("shoalblk %v: error does not say %q:\n%s", args, want, out)
		}
	}
	expectFail("does not exist", "format", p("a.img"))
	expectFail("not a positive multiple", "format", "--size", "1000", p("a.img"))
	expectFail("too small", "format", "--size", "1M", p("a.img"))
	os.Remove(p("a.img"))
	if _, err := run(t, bin, "format", "--size", "4M", "--region-size", "64K", p("a.img"), p("b.img")); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, bin, "format", "--size", "4M", "--region-size", "64K", "--cluster-id", "other", p("c.img")); err != nil {
		t.Fatal(err)
	}
	expectFail("exists with", "format", "--size", "8M", p("a.img"))
	expectFail("holds a superblock", "format", p("a.img"), p("b.img"))
	expectFail("belongs to volume", "check", p("a.img"), p("c.img"))
	// Other legs are found by the addresses recorded in the leg table;
	// one that is gone is reported missing.
	if _, err := run(t, bin, "check", p("a.img")); err != nil {
		t.Fatalf("check through recorded addresses: %v", err)
	}
	if err := os.Rename(p("b.img"), p("b.moved")); err != nil {
		t.Fatal(err)
	}
	expectFail("in-sync leg missing", "check", p("a.img"))
	if err := os.Rename(p("b.moved"), p("b.img")); err != nil {
		t.Fatal(err)
	}
	expectFail("does not exist", "status", p("a.img"), p("nope.img"))
	expectFail("out of range", "fail-leg", "--leg", "5", p("a.img"), p("b.img"))
	if _, err := run(t, bin, "fail-leg", "--leg", "1", p("a.img"), p("b.img")); err != nil {
		t.Fatal(err)
	}
	expectFail("last in-sync leg", "fail-leg", "--leg", "0", p("a.img"), p("b.img"))
	expectFail("last in-sync leg", "remove-leg", "--leg", "0", p("a.img"), p("b.img"))
	// The failed leg comes back through resync and the volume is clean.
	if _, err := run(t, bin, "resync", p("a.img"), p("b.img")); err != nil {
		t.Fatal(err)
	}
	out, err := runStdout(t, bin, "inspect", "--json", p("b.img"))
	if err != nil {
		t.Fatal(err)
	}
	var reps []legReport
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("inspect --json: %v", err)
	}
	for _, l := range reps[0].Legs {
		if l.State != mirror.LegInSync {
			t.Fatalf("after resync: %+v", reps[0].Legs)
		}
	}
}

// TestCheckAndScrub: check reports injected corruption with its location
// and fails; scrub --repair fixes it; check is clean again.
func TestCheckAndScrub(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	legs := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	if _, err := run(t, bin, append([]string{"format", "--size", "4M", "--region-size", "64K"}, legs...)...); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(legs[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Byte 5 of volume block 3 on leg 1 (data starts at 1 MiB here).
	if _, err := f.WriteAt([]byte("garbage"), 1<<20+3*4096+5); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := run(t, bin, append([]string{"check"}, legs...)...)
	if err == nil || !strings.Contains(out, "leg 1 region 0 offset 12288: checksum") || !strings.Contains(out, "mismatch") {
		t.Fatalf("check did not report the corruption with its location (err %v)", err)
	}
	if _, err := run(t, bin, append([]string{"scrub"}, legs...)...); err == nil {
		t.Fatal("scrub without --repair reported success on a bad volume")
	}
	out, err = runStdout(t, bin, append([]string{"scrub", "--repair", "--json"}, legs...)...)
	if err != nil {
		t.Fatal(err)
	}
	var rep mirror.ScrubReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Repairs) != 1 || rep.Repairs[0].Leg != 1 || rep.Repairs[0].Offset != 3*4096 || !rep.Repairs[0].Repaired {
		t.Fatalf("scrub report %+v", rep.Repairs)
	}
	if _, err := run(t, bin, append([]string{"check"}, legs...)...); err != nil {
		t.Fatalf("check after repair: %v", err)
	}
}
