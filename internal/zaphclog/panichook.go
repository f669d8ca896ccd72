package zaphclog

import (
	"sync/atomic"

	"runtime"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// RemovedMemberPanic is the message etcd's RaftCluster.IsLocalMemberLearner
// panics with when a request asks whether the local member is a learner in
// the instant after that member was removed from the cluster
// (etcd-io/etcd#21966, open at etcd v3.7.3). The requests that ask are
// Maintenance/Status, the learner interceptors and the health handler; a
// node that leaves the cluster is asked for its status by the others at any
// moment, so the race is real for `shoald leave`.
const RemovedMemberPanic = "failed to find local ID in cluster members"

// removedMemberHook ends only the goroutine that serves the racing request
// (runtime.Goexit runs its deferred calls, so the gRPC or HTTP server
// accounts for it; the caller's request times out) instead of the whole
// process, for that one message. Every other panic of etcd's logger still
// panics: those are broken invariants.
type removedMemberHook struct{}

func (removedMemberHook) OnWrite(ce *zapcore.CheckedEntry, _ []zapcore.Field) {
	if ce.Message == RemovedMemberPanic {
		runtime.Goexit()
	}
	panic(ce.Message)
}

// NewLogger is the zap logger an embedded etcd member logs through: entries
// at min and above go to log (see NewCore for quiet), and the panic etcd
// raises when a request races the local member's removal ends that
// request's goroutine, not the process (RemovedMemberPanic).
func NewLogger(log hclog.Logger, min hclog.Level, quiet *atomic.Bool) *zap.Logger {
	return zap.New(NewCore(log, min, quiet), zap.WithPanicHook(removedMemberHook{}))
}
