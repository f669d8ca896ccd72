package iscsi

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsPointOneWay keeps the initiator a leaf: it may use blockdev
// and the clock, never the mirror, the lock manager, the store or the
// daemon (and blockdev must never import it; it registers itself).
func TestImportsPointOneWay(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/shoal-ha/shoal/"
	allowed := []string{"blockdev", "blockdev/iscsi", "blockdev/iscsi/internal/", "internal/clock"}
	for _, p := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		good := false
		for _, a := range allowed {
			if rel == a || strings.HasSuffix(a, "/") && strings.HasPrefix(rel, a) {
				good = true
			}
		}
		if !good {
			t.Errorf("blockdev/iscsi depends on %s", p)
		}
	}
	out, err = exec.Command(goTool, "list", "-deps", "../").Output()
	if err != nil {
		t.Fatalf("go list blockdev: %v", err)
	}
	if strings.Contains(string(out), mod+"blockdev/iscsi") {
		t.Error("blockdev imports blockdev/iscsi")
	}
}
