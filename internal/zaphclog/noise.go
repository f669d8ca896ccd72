package zaphclog

import (
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/internal/clock"
)

// NoiseWindow is how often a repeated warning of etcd's that says the
// machine is slow, or that a peer is down, is let through at its own
// level; the ones in between go to debug and are counted in the next one.
const NoiseWindow = time.Minute

// noiseRule classes one of etcd's messages.
type noiseRule struct {
	msg string
	// errorContains, when set, narrows the rule to entries whose "error"
	// field contains it.
	errorContains string
	// debug: never actionable, always at debug. Otherwise the message is
	// rate-limited: one per NoiseWindow at its level, with a count of the
	// others.
	debug bool
}

// noiseRules are etcd's warnings that flood a busy node's log without
// telling the operator anything new each time. Errors are never touched.
var noiseRules = []noiseRule{
	// A loaded CPU or a slow disk: said once a minute, with a count.
	{msg: "apply request took too long"},
	{msg: "leader failed to send out heartbeat on time"},
	{msg: "request stats"},
	{msg: "waiting for ReadIndex response took too long"},
	{msg: "ignored out-of-date read index response"},
	{msg: "slow fdatasync"},
	// A member starting again while the others are busy: etcd retries
	// publishing it at once, hundreds of times in milliseconds.
	{msg: "failed to publish local member to cluster through raft"},
	// A peer that is down: the node's own member events say it; etcd
	// repeats it every few seconds per peer.
	{msg: "prober detected unhealthy status"},
	{msg: "lost TCP streaming connection with remote peer"},
	{msg: "failed to reach the peer URL"},
	{msg: "failed to get version"},
	{msg: "peer became inactive"},
	// Expected: a lease revoked by recovery after it had already expired.
	{msg: "failed to apply request", errorContains: "lease not found", debug: true},
	// How Shoal runs its members on purpose (client certificates, one
	// port per listener kind).
	{msg: "simple token is not cryptographically signed", debug: true},
	{msg: "Running http and grpc server on single port", debug: true},
}

// noiseFilter decides the level of each entry (the deterministic core of
// the rate limit: fed entries and times, it returns what to log).
type noiseFilter struct {
	clk    clock.Clock
	window time.Duration

	mu    sync.Mutex
	state map[string]*noiseState
}

type noiseState struct {
	since      time.Time
	suppressed int
}

func newNoiseFilter(clk clock.Clock, window time.Duration) *noiseFilter {
	return &noiseFilter{clk: clk, window: window, state: map[string]*noiseState{}}
}

// decide returns the level to log the entry at, and how many entries of
// the same kind were logged at debug since the last one at level (0: no
// count to add).
func (f *noiseFilter) decide(level hclog.Level, msg string, errField string) (hclog.Level, int) {
	if level >= hclog.Error {
		return level, 0
	}
	for _, r := range noiseRules {
		if !strings.HasPrefix(msg, r.msg) || (r.errorContains != "" && !strings.Contains(errField, r.errorContains)) {
			continue
		}
		if r.debug {
			return hclog.Debug, 0
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		now := f.clk.Now()
		st := f.state[r.msg]
		if st == nil || now.Sub(st.since) >= f.window {
			n := 0
			if st != nil {
				n = st.suppressed
			}
			f.state[r.msg] = &noiseState{since: now}
			return level, n
		}
		st.suppressed++
		return hclog.Debug, 0
	}
	return level, 0
}
