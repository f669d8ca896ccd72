// Package testlog gives tests an hclog.Logger that writes through t.Log, so
// a component's log lines show up next to the test that produced them.
package testlog

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// New returns a logger named name that writes to tb.Log at debug level.
func New(tb testing.TB, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.Debug,
		Output: writer{tb},
	})
}

type writer struct{ tb testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
