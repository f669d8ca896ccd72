package store

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A node that touched more files than Config.MaxCachedLocks gives up the
// grants it used least lately, written back first: it keeps at most the
// limit, another node reads every file whole and new (the blocks were
// checkpointed before the grants went), and the node asks again for what
// it uses next.
func TestIdleGrantsBeyondTheLimitAreGivenUp(t *testing.T) {
	const limit = 32
	dev := newMem(t, 8192, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0, func(c *Config) { c.MaxCachedLocks = limit })
	b := openNode(t, dev, lm, "b", 1)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	content := func(i, v int) string { return strings.Repeat(fmt.Sprintf("file %d version %d;", i, v), 10) }
	const files = 200
	for i := range files {
		if err := a.WriteFile(fmt.Sprintf("d/f%d", i), []byte(content(i, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.held.Load() > limit && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := a.held.Load(); n > limit {
		t.Fatalf("node keeps %d grants after creating %d files, limit %d", n, files, limit)
	}
	asked := a.Stats().LockRequests
	for i := range files {
		name := fmt.Sprintf("d/f%d", i)
		for _, s := range []*Store{b, a} {
			got, err := s.ReadFile(name)
			if err != nil || string(got) != content(i, 1) {
				t.Fatalf("%s read %s = %q (%v), want %q", s.cfg.Owner, name, got, err, content(i, 1))
			}
		}
	}
	if a.Stats().LockRequests == asked {
		t.Fatalf("node read %d files whose grants it gave up without asking for any", files)
	}
	if err := a.WriteFile("d/f0", []byte(content(0, 2)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := b.ReadFile("d/f0"); err != nil || string(got) != content(0, 2) {
		t.Fatalf("other node read %q (%v) after the rewrite, want %q", got, err, content(0, 2))
	}
	a.Close()
	b.Close()
	checkClean(t, dev)
}
