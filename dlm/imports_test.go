package dlm

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the dependency direction: the lock manager never
// depends on the block layer, the daemon, the store or the web tier.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/shoal-ha/shoal/"
	allowed := []string{mod + "dlm", mod + "internal/clock", mod + "internal/testlog", mod + "internal/etcdtest", mod + "internal/zaphclog"}
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, mod) {
			continue
		}
		ok := false
		for _, a := range allowed {
			if p == a || strings.HasPrefix(p, a+" ") || strings.HasPrefix(p, a+".") || strings.HasPrefix(p, a+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("dlm depends on %s", p)
		}
	}
}
