package testutil

import (
	"testing"
	"time"
)

// PollInterval is how often WaitFor checks its condition.
const PollInterval = 5 * time.Millisecond

// WaitFor calls cond every PollInterval until it returns true, and fails
// the test (t.Fatalf, naming what was awaited) if timeout passes first.
// Tests wait on conditions, never on fixed sleeps; timeout is only the
// bound after which the condition is taken as never coming.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// WaitForNil calls f every PollInterval until it returns nil, and fails
// the test with f's last error if timeout passes first.
func WaitForNil(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	var last error
	if err := Poll(timeout, func() bool { last = f(); return last == nil }); err != nil {
		t.Fatalf("timed out after %v waiting for %s: last error: %v", timeout, what, last)
	}
}

// ErrTimeout is returned by Poll when the condition did not hold in time.
type ErrTimeout struct{ After time.Duration }

func (e ErrTimeout) Error() string { return "condition not met within " + e.After.String() }

// Poll is WaitFor for code that cannot fail the test itself (a helper
// goroutine, a benchmark rig): it returns ErrTimeout when timeout passes
// before cond holds.
func Poll(timeout time.Duration, cond func() bool) error {
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			return ErrTimeout{After: timeout}
		}
		time.Sleep(PollInterval)
	}
	return nil
}
