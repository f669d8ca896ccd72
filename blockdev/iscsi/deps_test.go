package iscsi

import (
	"slices"
	"testing"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestImportsPointOneWay keeps the initiator a leaf: it may use blockdev
// and the clock, never the mirror, the lock manager, the store or the
// daemon (and blockdev must never import it; it registers itself).
func TestImportsPointOneWay(t *testing.T) {
	testutil.CheckDeps(t, testutil.Deps{
		Packages: []string{"blockdev/iscsi"},
		Allow:    []string{"blockdev", "blockdev/iscsi/...", "internal/clock"},
	})
	if slices.Contains(testutil.ListDeps(t, testutil.Deps{Packages: []string{"blockdev"}}), "blockdev/iscsi") {
		t.Error("blockdev imports blockdev/iscsi")
	}
}
