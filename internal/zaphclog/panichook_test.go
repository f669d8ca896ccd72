package zaphclog

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
)

// The race of etcd-io/etcd#21966 ends the goroutine of the request that
// lost it; the process goes on.
func TestRemovedMemberPanicEndsOnlyItsGoroutine(t *testing.T) {
	lg := NewLogger(hclog.NewNullLogger(), hclog.Warn, nil)
	done := make(chan bool)
	go func() {
		returned := true
		defer func() { done <- returned }()
		lg.Panic(RemovedMemberPanic, zap.String("local-member-id", "8e9e05c52164694d"))
		returned = false // reached only if Panic returned
	}()
	if returned := <-done; !returned {
		t.Fatal("Panic returned to its caller; want the goroutine ended")
	}
}

// Every other panic of etcd's logger is a broken invariant and still panics.
func TestOtherPanicsStillPanic(t *testing.T) {
	lg := NewLogger(hclog.NewNullLogger(), hclog.Warn, nil)
	defer func() {
		if r := recover(); r != "raft log corrupted" {
			t.Fatalf("recovered %v, want the panic of the message", r)
		}
	}()
	lg.Panic("raft log corrupted")
	t.Fatal("Panic returned")
}
