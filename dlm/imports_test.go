package dlm

import (
	"testing"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestImports keeps the dependency direction: the lock manager never
// depends on the block layer, the daemon, the store or the web tier.
func TestImports(t *testing.T) {
	testutil.CheckDeps(t, testutil.Deps{
		Packages: []string{"dlm"},
		Tests:    true,
		Allow:    []string{"dlm", "internal/clock", "internal/testlog", "internal/etcdtest", "internal/zaphclog", "internal/testutil", "internal/keys", "internal/lease", "internal/portres", "internal/attempt"},
	})
}
