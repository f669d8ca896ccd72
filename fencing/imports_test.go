package fencing_test

import (
	"testing"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestImports keeps the dependency direction: fencing uses the block
// device contracts and etcd, never the lock manager, the daemon, the
// store or the web tier (the daemon passes their work in as hooks), nor
// blockdev's backends (mirror, iscsi). Only the tests in tgtdtest reach
// the iSCSI initiator and the target rig.
func TestImports(t *testing.T) {
	allow := []string{"fencing/...", "blockdev", "internal/clock", "internal/testlog", "internal/etcdtest", "internal/zaphclog", "internal/keys", "internal/portres", "internal/attempt"}
	testutil.CheckDeps(t, testutil.Deps{Packages: []string{"fencing/..."}, Allow: allow})
	testutil.CheckDeps(t, testutil.Deps{
		Packages: []string{"fencing", "fencing/recovery", "fencing/detect", "fencing/fencetest"},
		Tests:    true,
		Allow:    append(allow, "internal/testutil"),
	})
}
