package clock

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Fake is a clock that moves only when a test calls Advance. Timers and
// tickers fire synchronously inside Advance, in deadline order.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeWaiter
	added   chan struct{} // closed and replaced whenever a timer or ticker starts waiting
}

type fakeWaiter struct {
	at     time.Time
	period time.Duration // zero for one-shot timers
	ch     chan time.Time
	active bool
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake { return &Fake{now: start, added: make(chan struct{})} }

// wake tells BlockUntil callers, under mu, that a waiter was added.
func (f *Fake) wake() {
	if f.added == nil {
		f.added = make(chan struct{})
		return
	}
	close(f.added)
	f.added = make(chan struct{})
}

// BlockUntil blocks until at least n timers and tickers wait on the clock
// (the code under test has reached the point where it waits for time to
// pass), so a test can Advance without polling Pending. It does not return
// if that never happens: tests use BlockUntilContext with a deadline.
func (f *Fake) BlockUntil(n int) { _ = f.BlockUntilContext(context.Background(), n) }

// BlockUntilContext is BlockUntil bounded by ctx; it returns ctx's error
// (with the number of waiters seen) when ctx ends first.
func (f *Fake) BlockUntilContext(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		pending := f.pendingLocked()
		if f.added == nil {
			f.added = make(chan struct{})
		}
		added := f.added
		f.mu.Unlock()
		if pending >= n {
			return nil
		}
		select {
		case <-added:
		case <-ctx.Done():
			return fmt.Errorf("clock: %d timers and tickers waiting, want %d: %w", pending, n, ctx.Err())
		}
	}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Since returns the fake time elapsed since t.
func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

// After returns a channel that receives once d has passed.
func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

// NewTimer returns a one-shot timer on the fake clock.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{at: f.now.Add(d), ch: make(chan time.Time, 1), active: true}
	f.waiters = append(f.waiters, w)
	f.wake()
	return &fakeTimer{f: f, w: w}
}

// NewTicker returns a ticker on the fake clock. Like time.Ticker it drops
// ticks that the reader is not ready for.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker interval")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{at: f.now.Add(d), period: d, ch: make(chan time.Time, 1), active: true}
	f.waiters = append(f.waiters, w)
	f.wake()
	return &fakeTicker{f: f, w: w}
}

// Advance moves the clock forward by d, firing every timer and ticker whose
// deadline is reached, in order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		sort.Slice(f.waiters, func(i, j int) bool { return f.waiters[i].at.Before(f.waiters[j].at) })
		var next *fakeWaiter
		for _, w := range f.waiters {
			if w.active && !w.at.After(end) {
				next = w
				break
			}
		}
		if next == nil {
			break
		}
		f.now = next.at
		select {
		case next.ch <- f.now:
		default:
		}
		if next.period > 0 {
			next.at = next.at.Add(next.period)
		} else {
			next.active = false
		}
	}
	f.now = end
	f.compact()
}

// Pending reports how many timers and tickers are waiting to fire.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pendingLocked()
}

func (f *Fake) pendingLocked() int {
	n := 0
	for _, w := range f.waiters {
		if w.active {
			n++
		}
	}
	return n
}

func (f *Fake) compact() {
	live := f.waiters[:0]
	for _, w := range f.waiters {
		if w.active {
			live = append(live, w)
		}
	}
	f.waiters = live
}

type fakeTimer struct {
	f *Fake
	w *fakeWaiter
}

func (t *fakeTimer) C() <-chan time.Time { return t.w.ch }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	was := t.w.active
	t.w.active = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	was := t.w.active
	t.w.at = t.f.now.Add(d)
	t.w.active = true
	t.f.wake()
	for _, w := range t.f.waiters {
		if w == t.w {
			return was
		}
	}
	t.f.waiters = append(t.f.waiters, t.w)
	return was
}

type fakeTicker struct {
	f *Fake
	w *fakeWaiter
}

func (t *fakeTicker) C() <-chan time.Time { return t.w.ch }

func (t *fakeTicker) Stop() {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	t.w.active = false
}
