package testutil

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if err := Poll(5*time.Second, func() bool { return n.Add(1) >= 3 }); err != nil {
		t.Fatal(err)
	}
	err := Poll(20*time.Millisecond, func() bool { return false })
	var te ErrTimeout
	if !errors.As(err, &te) || te.After != 20*time.Millisecond {
		t.Fatalf("Poll of a condition that never holds = %v", err)
	}
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		rel     string
		entries []string
		want    bool
	}{
		{"dlm", []string{"dlm"}, true},
		{"dlm/x", []string{"dlm"}, false},
		{"dlm/x", []string{"dlm/..."}, true},
		{"dlm", []string{"dlm/..."}, true},
		{"dlmx", []string{"dlm/..."}, false},
		{"blockdev/mirror", []string{"blockdev/iscsi/..."}, false},
		{"internal/clock", nil, false},
	} {
		if got := matches(c.rel, c.entries); got != c.want {
			t.Errorf("matches(%q, %q) = %v", c.rel, c.entries, got)
		}
	}
}

// TestImports applies the rule to this package itself: it is a leaf that
// every package's tests may import.
func TestImports(t *testing.T) {
	deps := ListDeps(t, Deps{Packages: []string{"internal/testutil"}, Tests: true})
	if len(deps) != 1 || deps[0] != "internal/testutil" {
		t.Fatalf("internal/testutil depends on %q", deps)
	}
	CheckDeps(t, Deps{Packages: []string{"internal/testutil"}, Tests: true, Allow: []string{"internal/testutil"}})
}
