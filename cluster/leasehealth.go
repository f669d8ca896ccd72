package cluster

import (
	"fmt"
	"time"
)

// renewalWatch notices lease renewals that run late, so that a lease lost
// (or nearly lost) to a busy machine says why. It is fed the keep-alive
// ticks and the confirmed renewals, with their times; it keeps no clock
// of its own.
type renewalWatch struct {
	interval, ttl time.Duration
	// advice is what the operator can change (the timing profile, the
	// lease TTL), from the node's configuration.
	advice string

	lastConfirmed time.Time
	lastTick      time.Time
	// lastReturn is when the last renewal attempt returned, answered or
	// not: the ticks wait for it, so a renewal that waits on etcd (a
	// partition, no quorum) delays the next tick without any lack of CPU.
	lastReturn time.Time
	// lateTicks and maxTickDelay cover the ticks since the last
	// confirmed renewal: a tick that fires more than an interval after
	// the previous one, and after the last renewal attempt returned,
	// means the process did not get the CPU in time.
	lateTicks    int
	maxTickDelay time.Duration
	lastWarn     time.Time
}

// renewalWarnEvery bounds the "renewals run late" warnings.
const renewalWarnEvery = time.Minute

func newRenewalWatch(now time.Time, interval, ttl time.Duration, advice string) *renewalWatch {
	return &renewalWatch{interval: interval, ttl: ttl, advice: advice, lastConfirmed: now, lastTick: now}
}

// tick records a keep-alive tick at now.
func (w *renewalWatch) tick(now time.Time) {
	if delay := now.Sub(maxTime(w.lastTick, w.lastReturn)) - w.interval; delay > w.interval/2 {
		w.lateTicks++
		w.maxTickDelay = max(w.maxTickDelay, delay)
	}
	w.lastTick = now
}

// returned records that a renewal attempt returned at now, confirmed or
// not.
func (w *renewalWatch) returned(now time.Time) { w.lastReturn = now }

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// confirmed records a renewal confirmed at now. It returns the fields of
// a warning when the renewal came late enough that the lease was nearly
// lost (more than half its TTL after the previous one), at most once per
// renewalWarnEvery; nil otherwise.
func (w *renewalWatch) confirmed(now time.Time) []any {
	gap := now.Sub(w.lastConfirmed)
	var warn []any
	if gap > w.ttl/2 && now.Sub(w.lastWarn) >= renewalWarnEvery {
		w.lastWarn = now
		warn = w.fields(now)
	}
	w.lastConfirmed, w.lateTicks, w.maxTickDelay = now, 0, 0
	return warn
}

// fields describe the renewals since the last confirmed one, for a
// warning or the lease-lost error: how long ago, the likely cause and the
// advice.
func (w *renewalWatch) fields(now time.Time) []any {
	cause := "etcd did not confirm the renewals in time (a busy or partitioned etcd, too few members for a quorum, or a slow disk under it)"
	if w.lateTicks > 0 {
		cause = fmt.Sprintf("keep-alives ran late: this process did not get the CPU in time (%d keep-alive ticks late, up to %v)", w.lateTicks, w.maxTickDelay.Round(time.Millisecond))
	}
	return []any{"since_last_renewal", now.Sub(w.lastConfirmed).Round(time.Millisecond), "ttl", w.ttl, "cause", cause, "advice", w.advice}
}
