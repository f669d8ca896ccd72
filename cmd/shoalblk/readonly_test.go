package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// legSums is the SHA-256 of every byte of every file in dir ending in .img.
func legSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.img"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		out[filepath.Base(n)] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

func sameSums(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("%s: legs %v became %v", what, before, after)
	}
	for n, s := range before {
		if after[n] != s {
			t.Fatalf("%s wrote to %s", what, n)
		}
	}
}

// TestLookingNeverWrites: the operator's sequence that rolled the leg
// table back. format a b; add-leg c; remove-leg 2 (a and b at generation 4,
// c at 3). Then inspect, status and check, each started from every leg and
// with the legs in several orders, with and without --allow-missing, leave
// every byte of every leg as it was (SHA-256 of each leg file before and
// after each command), and the table stays at generation 4 without c.
func TestLookingNeverWrites(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(t, bin, args...)
		if err != nil {
			t.Fatalf("shoalblk %v: %v", args, err)
		}
		return out
	}
	mustRun("format", "--size", "4M", "--region-size", "64K", "--cluster-id", "t", p("a.img"), p("b.img"))
	mustRun("add-leg", "--leg", p("c.img"), p("a.img"), p("b.img"))
	mustRun("remove-leg", "--leg", "2", p("a.img"), p("b.img"), p("c.img"))
	generation := func(leg string) (uint64, int) {
		t.Helper()
		out, err := runStdout(t, bin, "inspect", "--json", p(leg))
		if err != nil {
			t.Fatal(err)
		}
		var reps []legReport
		if err := json.Unmarshal([]byte(out), &reps); err != nil {
			t.Fatal(err)
		}
		return reps[0].Generation, len(reps[0].Legs)
	}
	if g, n := generation("a.img"); g != 4 || n != 2 {
		t.Fatalf("after remove-leg: a at generation %d with %d legs", g, n)
	}
	type look struct {
		args      []string
		mustFail  string // "" when the command must succeed
		mustPrint string
	}
	var looks []look
	for _, cmd := range []string{"status", "check"} {
		for _, legs := range [][]string{{"c.img"}, {"c.img", "a.img"}, {"b.img", "c.img", "a.img"}} {
			looks = append(looks, look{args: append([]string{cmd}, legs...), mustFail: "was removed"})
		}
		for _, legs := range [][]string{{"a.img"}, {"b.img"}, {"b.img", "a.img"}} {
			looks = append(looks, look{args: append([]string{cmd}, legs...)})
		}
		looks = append(looks, look{args: []string{cmd, "--json", "b.img"}})
	}
	looks = append(looks,
		look{args: []string{"inspect", "c.img", "a.img", "b.img"}, mustPrint: "stale"},
		look{args: []string{"inspect", "--json", "c.img"}})
	for _, l := range looks {
		var args []string
		for _, a := range l.args {
			if strings.HasSuffix(a, ".img") {
				a = p(a)
			}
			args = append(args, a)
		}
		before := legSums(t, dir)
		out, err := run(t, bin, args...)
		sameSums(t, "shoalblk "+strings.Join(l.args, " "), before, legSums(t, dir))
		switch {
		case l.mustFail != "" && (err == nil || !strings.Contains(out, l.mustFail)):
			t.Fatalf("shoalblk %v: want a failure saying %q, got %v:\n%s", l.args, l.mustFail, err, out)
		case l.mustFail == "" && err != nil:
			t.Fatalf("shoalblk %v: %v", l.args, err)
		case !strings.Contains(out, l.mustPrint):
			t.Fatalf("shoalblk %v does not say %q:\n%s", l.args, l.mustPrint, out)
		case strings.Contains(out, "[WARN]") || strings.Contains(out, "[INFO]"):
			t.Fatalf("shoalblk %v logs without -v:\n%s", l.args, out)
		}
	}
	for _, leg := range []string{"a.img", "b.img"} {
		if g, n := generation(leg); g != 4 || n != 2 {
			t.Fatalf("after looking: %s at generation %d with %d legs, want 4 with 2", leg, g, n)
		}
	}

	// status and check --allow-missing with b gone: b is shown not
	// attached, not failed, and nothing changes on a.
	if err := os.Rename(p("b.img"), p("b.gone")); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"status", "check"} {
		before := legSums(t, dir)
		out, err := runStdout(t, bin, cmd, "--allow-missing", "--json", p("a.img"))
		sameSums(t, cmd+" --allow-missing", before, legSums(t, dir))
		if err != nil {
			t.Fatalf("%s --allow-missing: %v", cmd, err)
		}
		var st struct {
			Generation uint64            `json:"generation"`
			Legs       []json.RawMessage `json:"legs"`
			Notes      []string          `json:"notes"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		var leg1 struct {
			State  mirror.LegState `json:"state"`
			Online *bool           `json:"online"`
		}
		if err := json.Unmarshal(st.Legs[1], &leg1); err != nil {
			t.Fatal(err)
		}
		if st.Generation != 4 || leg1.State != mirror.LegInSync || (leg1.Online != nil && *leg1.Online) || !strings.Contains(strings.Join(st.Notes, " "), "not changed") {
			t.Fatalf("%s --allow-missing with b gone: %s", cmd, out)
		}
	}
	if err := os.Rename(p("b.gone"), p("b.img")); err != nil {
		t.Fatal(err)
	}
	if g, _ := generation("a.img"); g != 4 {
		t.Fatalf("status --allow-missing moved a to generation %d", g)
	}
	mustRun("check", p("a.img"), p("b.img"))
}
