package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-ha/shoal/internal/clidoc"
)

// lockedBuffer is a writer the mirror's progress callbacks and the command
// may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runInProcess runs shoalblk with args on a tree of its own in the test
// process and returns its standard output, standard error and exit code.
func runInProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut lockedBuffer
	code = execute(context.Background(), newRoot(&out, &errOut), args)
	t.Logf("shoalblk %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// TestInProcess formats a volume over two files, inspects and checks it
// through newRoot in the test process, and sees bad input fail with the
// process's error text and exit code.
func TestInProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")

	out, _, code := runInProcess(t, "format", "--size", "4M", "--region-size", "64K", "--slots", "2", a, b)
	if code != 0 {
		t.Fatalf("format: exit %d", code)
	}
	m := regexp.MustCompile(`^formatted volume ([0-9a-f-]{36}): (\d+) bytes, (\d+) regions of 65536 bytes, 2 node slots, 2 legs\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("format printed %q", out)
	}
	volume := m[1]

	// inspect --json reads each leg on its own: both hold the same
	// volume, a two-leg table of in-sync legs, clean bitmaps.
	out, _, code = runInProcess(t, "inspect", "--json", a, b)
	if code != 0 {
		t.Fatalf("inspect: exit %d", code)
	}
	var reps []legReport
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	if len(reps) != 2 {
		t.Fatalf("inspect --json: %d reports, want 2", len(reps))
	}
	for i, r := range reps {
		if r.Error != "" || r.Volume != volume || r.Stale != "" || len(r.Legs) != 2 || len(r.Bitmaps) != 2 {
			t.Fatalf("leg %d: %+v", i, r)
		}
		if r.Self != r.Legs[i].UUID.String() {
			t.Errorf("leg %d reports itself as %s, the table has %s there", i, r.Self, r.Legs[i].UUID)
		}
		for _, s := range r.Bitmaps {
			if len(s.Dirty) != 0 || len(s.Damaged) != 0 {
				t.Errorf("leg %d slot %d: dirty %v damaged %v after format", i, s.Slot, s.Dirty, s.Damaged)
			}
		}
	}

	// A second tree in the same process does not see the first one's
	// --json: inspect without it prints text.
	out, _, code = runInProcess(t, "inspect", a)
	if code != 0 || !strings.HasPrefix(out, "leg "+a+"\n  volume "+volume) {
		t.Fatalf("inspect without --json: exit %d:\n%s", code, out)
	}

	out, _, code = runInProcess(t, "check", a, b)
	if code != 0 || !regexp.MustCompile(`(?m)^checked \d+ regions on 2 legs: 0 problems, 0 pending recovery$`).MatchString(out) {
		t.Fatalf("check: exit %d:\n%s", code, out)
	}

	// Bad input: exit 1, the error on standard error as the process
	// prints it, nothing on standard output.
	for _, bad := range []struct {
		args []string
		err  string
	}{
		{[]string{"format", filepath.Join(dir, "c.img")}, filepath.Join(dir, "c.img") + " does not exist; give --size to create it"},
		{[]string{"format", "--size", "1000", filepath.Join(dir, "c.img")}, "--size 1000 is not a positive multiple of 4096 bytes"},
		{[]string{"format", "--size", "4M", a, a}, "leg " + a + " given twice"},
		{[]string{"check", "--nope", a}, "unknown flag: --nope"},
		{[]string{"fail-leg", "--leg", "5", a, b}, "leg 5 out of range: the volume has 2 legs"},
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "shoalblk"`},
	} {
		out, errOut, code := runInProcess(t, bad.args...)
		if code != 1 || out != "" || errOut != "shoalblk: "+bad.err+"\n" {
			t.Errorf("shoalblk %s: exit %d, stdout %q, stderr %q; want exit 1 and stderr %q",
				strings.Join(bad.args, " "), code, out, errOut, "shoalblk: "+bad.err+"\n")
		}
	}

	// A leg that holds no superblock is reported and fails inspect.
	junk := filepath.Join(dir, "junk.img")
	if err := os.WriteFile(junk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runInProcess(t, "inspect", a, junk)
	if code != 1 || errOut != "shoalblk: 1 of 2 legs could not be read\n" || !strings.Contains(out, "leg "+junk+"\n  error: ") {
		t.Fatalf("inspect of a blank leg: exit %d:\n%s%s", code, out, errOut)
	}
	// None of it changed the volume.
	if _, _, code := runInProcess(t, "check", a, b); code != 0 {
		t.Fatalf("check after the refusals: exit %d", code)
	}
}

// TestManAndCompletion: the man pages and shell completion come from
// newRoot's tree, with every command and flag.
func TestManAndCompletion(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "man1")
	if err := clidoc.WriteMan(newRoot(&bytes.Buffer{}, &bytes.Buffer{}), dir); err != nil {
		t.Fatal(err)
	}
	for page, want := range map[string]string{
		"shoalblk.1":             "block-device helper",
		"shoalblk-format.1":      "--force-while-open",
		"shoalblk-store-check.1": "--online",
		"shoalblk-iscsi-pr.1":    "--initiator-name",
		"shoalblk-add-leg.1":     "--no-resync",
	} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.ReplaceAll(string(b), `\-`, "-"), want) {
			t.Errorf("%s lacks %q", page, want)
		}
	}
	// Hidden commands (stress, man) have no page.
	for _, page := range []string{"shoalblk-stress.1", "shoalblk-man.1"} {
		if _, err := os.Stat(filepath.Join(dir, page)); err == nil {
			t.Errorf("hidden command got %s", page)
		}
	}
	// The man subcommand writes the same pages.
	dir2 := filepath.Join(t.TempDir(), "man1")
	if _, _, code := runInProcess(t, "man", dir2); code != 0 {
		t.Fatalf("man: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir2, "shoalblk-mkstore.1")); err != nil {
		t.Fatal(err)
	}
	out, _, code := runInProcess(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "__start_shoalblk") {
		t.Fatalf("completion bash: exit %d: %.200s", code, out)
	}
}
