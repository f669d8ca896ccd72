package testutil

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Module is the import path of the Shoal module.
const Module = "github.com/shoal-ha/shoal"

// Deps is a dependency-direction rule: every Shoal package that Packages
// depend on (directly or not) must match Allow and must not match Deny.
// Entries are module-relative paths in `go list` pattern style: "dlm"
// matches that package alone, "dlm/..." matches it and every package
// below it.
type Deps struct {
	// Packages are the packages whose dependencies are checked, as
	// module-relative `go list` patterns ("fencing/...").
	Packages []string
	// Tests includes the dependencies of the packages' tests.
	Tests bool
	// Allow lists the Shoal packages the dependencies may be.
	Allow []string
	// Deny lists packages refused even when Allow matches them.
	Deny []string
}

func matches(rel string, entries []string) bool {
	for _, a := range entries {
		if base, tree := strings.CutSuffix(a, "/..."); tree {
			if rel == base || strings.HasPrefix(rel, base+"/") {
				return true
			}
		} else if rel == a {
			return true
		}
	}
	return false
}

// ListDeps returns the module-relative paths of the Shoal packages that
// the rule's packages depend on (including themselves), from `go list
// -deps`, sorted and without test variants.
func ListDeps(t testing.TB, d Deps) []string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	args := []string{"list", "-deps"}
	if d.Tests {
		args = append(args, "-test")
	}
	for _, p := range d.Packages {
		args = append(args, Module+"/"+strings.TrimPrefix(p, "./"))
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var rels []string
	for _, line := range strings.Split(string(out), "\n") {
		// Test variants read "pkg [pkg.test]", "pkg_test [pkg.test]" or "pkg.test".
		p, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		p = strings.TrimSuffix(strings.TrimSuffix(p, ".test"), "_test")
		rel, ok := strings.CutPrefix(p, Module+"/")
		if !ok {
			continue
		}
		if !slices.Contains(rels, rel) {
			rels = append(rels, rel)
		}
	}
	slices.Sort(rels)
	return rels
}

// CheckDeps fails t for every dependency that breaks the rule.
func CheckDeps(t testing.TB, d Deps) {
	t.Helper()
	for _, rel := range ListDeps(t, d) {
		if !matches(rel, d.Allow) || matches(rel, d.Deny) {
			t.Errorf("%s depends on %s, which the dependency rule does not allow", strings.Join(d.Packages, ", "), rel)
		}
	}
}
