// Package testutil holds the helpers every package's tests share, so that
// each idea is written once: waiting on a condition with a deadline
// (WaitFor) and keeping package dependencies pointing one way
// (CheckDeps).
//
// Usage:
//
//	testutil.WaitFor(t, 10*time.Second, "the replica to catch up", func() bool { return n.Revision() >= rev })
//
//	func TestImports(t *testing.T) {
//		testutil.CheckDeps(t, testutil.Deps{
//			Packages: []string{"dlm/..."},
//			Tests:    true,
//			Allow:    []string{"dlm/...", "internal/clock", "internal/testutil"},
//		})
//	}
package testutil
