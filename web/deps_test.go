package web

import (
	"testing"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// The web tier builds on the store and nothing of the node: the node
// (web/webnode) assembles it, never the other way round. The exactly-once
// core imports nothing of Shoal.
func TestDependencyDirection(t *testing.T) {
	testutil.CheckDeps(t, testutil.Deps{
		Packages: []string{"web", "web/webtest"},
		Allow:    []string{"web", "web/session", "web/webtest", "store", "blockdev", "internal/clock"},
	})
	testutil.CheckDeps(t, testutil.Deps{
		Packages: []string{"web/session"},
		Allow:    []string{"web/session"},
	})
}
