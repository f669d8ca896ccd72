// Package lease holds the one rule every holder of an etcd lease in Shoal
// follows, nodes and tools alike: the lease must outlive an etcd leader
// change, and etcd must not silently raise its TTL.
package lease

import (
	"errors"
	"fmt"
	"time"
)

// DefaultElection is etcd's default raft election timeout (1 s), the one
// of the daemon's production profile; tools that do not know the
// cluster's own assume it.
const DefaultElection = time.Second

// Timing is how a lease is kept.
type Timing struct {
	// TTL is the lease time-to-live, whole seconds (etcd's unit).
	TTL time.Duration
	// KeepAlive is the interval between renewals.
	KeepAlive time.Duration
	// KeepAliveTimeout bounds one renewal attempt.
	KeepAliveTimeout time.Duration
	// Election is the etcd cluster's raft election timeout.
	Election time.Duration
	// Margin is how long before the lease may expire its holder stops
	// using what the lease guards (the self-fence margin).
	Margin time.Duration
}

// RideOut is the shortest TTL that rides out an etcd leader change:
// followers notice a lost leader after one election timeout and a new
// leader may need up to another before it serves renewals (raft, Ongaro's
// thesis section 3.4); a renewal sent just before may time out on the
// way, the next one comes a keep-alive interval later, and the holder
// stops a margin before expiry.
func RideOut(keepAlive, keepAliveTimeout, election, margin time.Duration) time.Duration {
	return keepAlive + keepAliveTimeout + 2*election + margin
}

// EtcdMinTTL is etcd's minimum lease TTL: the lessor raises any shorter
// TTL to 1.5 election timeouts, without a word.
func EtcdMinTTL(election time.Duration) time.Duration { return 3 * election / 2 }

// ErrTiming marks a lease timing that breaks the rule; the message says
// which value and what it must be. Retrying with the same timing fails
// the same way.
var ErrTiming = errors.New("lease timing")

// Check says whether t follows the rule.
func (t Timing) Check() error {
	switch {
	case t.TTL < time.Second || t.TTL%time.Second != 0:
		return fmt.Errorf("%w: TTL %v must be a whole number of seconds, at least 1s", ErrTiming, t.TTL)
	case t.KeepAlive <= 0 || t.KeepAliveTimeout <= 0 || t.Election <= 0 || t.Margin < 0:
		return fmt.Errorf("%w: keep-alive %v, keep-alive timeout %v and election timeout %v must be positive, margin %v not negative",
			ErrTiming, t.KeepAlive, t.KeepAliveTimeout, t.Election, t.Margin)
	}
	if ride := RideOut(t.KeepAlive, t.KeepAliveTimeout, t.Election, t.Margin); t.TTL < ride {
		return fmt.Errorf("%w: TTL %v cannot ride out an etcd leader change: with keep-alive %v, keep-alive timeout %v, election timeout %v and margin %v it must be at least %v",
			ErrTiming, t.TTL, t.KeepAlive, t.KeepAliveTimeout, t.Election, t.Margin, ride.Round(time.Millisecond))
	}
	if m := EtcdMinTTL(t.Election); t.TTL < m {
		return fmt.Errorf("%w: TTL %v is below etcd's minimum lease TTL of 1.5x election timeout (%v)", ErrTiming, t.TTL, m)
	}
	return nil
}

// ClientTiming is the timing of a lease held by a tool (lockctl, a
// benchmark) in a cluster whose election timeout is election: renewals
// every 500 ms, each bounded by 500 ms, and the shortest whole-second TTL
// that passes Check.
func ClientTiming(election, margin time.Duration) Timing {
	t := Timing{KeepAlive: 500 * time.Millisecond, KeepAliveTimeout: 500 * time.Millisecond, Election: election, Margin: margin}
	need := max(RideOut(t.KeepAlive, t.KeepAliveTimeout, election, margin), EtcdMinTTL(election), time.Second)
	t.TTL = (need + time.Second - 1) / time.Second * time.Second
	return t
}
