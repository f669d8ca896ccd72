// Package clock lets leases, deadlines, timeouts and pacing read time
// through an interface, so unit tests can drive a fake clock step by step
// instead of sleeping.
package clock

import "time"

// Clock is the source of time for everything that measures leases and
// deadlines. Real returns the wall clock; Fake is advanced by tests.
type Clock interface {
	Now() time.Time
	Since(t time.Time) time.Duration
	// After delivers the time once d has passed on this clock.
	After(d time.Duration) <-chan time.Time
	// NewTimer returns a timer that fires once d has passed on this clock.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that fires every d on this clock.
	NewTicker(d time.Duration) Ticker
}

// Timer is the part of time.Timer that Shoal uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is the part of time.Ticker that Shoal uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) Since(t time.Time) time.Duration        { return time.Since(t) }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) NewTimer(d time.Duration) Timer         { return realTimer{time.NewTimer(d)} }
func (realClock) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }
