package fencing_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the dependency direction: fencing uses the block
// device contracts and etcd, never the lock manager, the daemon, the
// store or the web tier (the daemon passes their work in as hooks). Only
// the tests in tgtdtest reach the iSCSI initiator and the target rig.
func TestImports(t *testing.T) {
	checkDeps(t, "go", "list", "-deps", "./...")
	checkDeps(t, "go", "list", "-deps", "-test", ".", "./recovery", "./detect", "./fencetest")
}

func checkDeps(t *testing.T, cmd ...string) {
	t.Helper()
	out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/shoal-ha/shoal/"
	allowed := []string{mod + "fencing", mod + "blockdev", mod + "internal/clock", mod + "internal/testlog", mod + "internal/etcdtest", mod + "internal/zaphclog"}
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, mod) {
			continue
		}
		ok := false
		for _, a := range allowed {
			if p == a || p == a+"_test" || strings.HasPrefix(p, a+" ") || strings.HasPrefix(p, a+".") || strings.HasPrefix(p, a+"/") {
				ok = true
			}
		}
		// blockdev's backends (mirror, iscsi) are not needed either.
		if strings.HasPrefix(p, mod+"blockdev/") {
			ok = false
		}
		if !ok {
			t.Errorf("fencing depends on %s", p)
		}
	}
}
