package fencing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Backoff is an exponential back-off schedule.
type Backoff struct {
	// Initial is the wait after the first failure.
	Initial time.Duration
	// Max caps the wait.
	Max time.Duration
	// Multiplier grows the wait after each failure; at least 1.
	Multiplier float64
}

// DefaultBackoff waits 100ms, doubling up to 5s.
func DefaultBackoff() Backoff {
	return Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}
}

// Validate says which field is wrong.
func (b Backoff) Validate() error {
	switch {
	case b.Initial <= 0:
		return fmt.Errorf("fencing: Backoff.Initial %v must be positive", b.Initial)
	case b.Max < b.Initial:
		return fmt.Errorf("fencing: Backoff.Max %v is below Initial %v", b.Max, b.Initial)
	case b.Multiplier < 1:
		return fmt.Errorf("fencing: Backoff.Multiplier %v is below 1", b.Multiplier)
	}
	return nil
}

// Delay is the wait after the given number of consecutive failures (1 for
// the first).
func (b Backoff) Delay(failures int) time.Duration {
	d := float64(b.Initial)
	for i := 1; i < failures && d < float64(b.Max); i++ {
		d *= b.Multiplier
	}
	return min(time.Duration(d), b.Max)
}

// Attempt reports one fence attempt to the status hook.
type Attempt struct {
	Victim NodeRef
	// Number counts attempts for this Fence call, from 1.
	Number int
	// Err is the attempt's error; nil on success.
	Err error
	// Took is how long the attempt ran.
	Took time.Duration
	// RetryIn is the wait before the next attempt; zero when none follows.
	RetryIn time.Duration
}

// RetryConfig configures a Retrying fencer.
type RetryConfig struct {
	// Fencer does the fencing. Required.
	Fencer Fencer
	// Backoff is the wait schedule between attempts.
	Backoff Backoff
	// MaxAttempts bounds the attempts of one Fence call; zero means retry
	// until the context ends. A recovery must never go on unfenced, so the
	// coordinator leaves this at zero and cancels the context instead.
	MaxAttempts int
	// Clock times the waits. Nil means the real clock.
	Clock clock.Clock
	// Logger receives one line per failed attempt. Nil discards.
	Logger hclog.Logger
	// OnAttempt, when set, is called after every attempt: the hook for
	// metrics and `shoald status`.
	OnAttempt func(Attempt)
}

// Retrying retries a fencer with exponential back-off until it succeeds,
// the context ends, or the error says retrying cannot help (ErrFenced,
// ErrFenceSelf).
type Retrying struct {
	cfg RetryConfig
	clk clock.Clock
	log hclog.Logger
}

// NewRetrying checks cfg and returns the wrapper.
func NewRetrying(cfg RetryConfig) (*Retrying, error) {
	if cfg.Fencer == nil {
		return nil, fmt.Errorf("fencing: RetryConfig.Fencer is nil")
	}
	if err := cfg.Backoff.Validate(); err != nil {
		return nil, fmt.Errorf("fencing: RetryConfig.Backoff: %w", err)
	}
	if cfg.MaxAttempts < 0 {
		return nil, fmt.Errorf("fencing: RetryConfig.MaxAttempts %d is negative", cfg.MaxAttempts)
	}
	r := &Retrying{cfg: cfg, clk: cfg.Clock, log: cfg.Logger}
	if r.clk == nil {
		r.clk = clock.Real()
	}
	if r.log == nil {
		r.log = hclog.NewNullLogger()
	}
	return r, nil
}

// Retriable reports whether fencing again may help after err.
func Retriable(err error) bool {
	return err != nil && !errors.Is(err, ErrFenced) && !errors.Is(err, ErrFenceSelf)
}

// Fence fences victim, retrying with back-off.
func (r *Retrying) Fence(ctx context.Context, victim NodeRef) error {
	for n := 1; ; n++ {
		start := r.clk.Now()
		err := r.cfg.Fencer.Fence(ctx, victim)
		a := Attempt{Victim: victim, Number: n, Err: err, Took: r.clk.Since(start)}
		last := err == nil || !Retriable(err) || ctx.Err() != nil || (r.cfg.MaxAttempts > 0 && n >= r.cfg.MaxAttempts)
		if !last {
			a.RetryIn = r.cfg.Backoff.Delay(n)
		}
		if r.cfg.OnAttempt != nil {
			r.cfg.OnAttempt(a)
		}
		if err == nil {
			return nil
		}
		if last {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
			return fmt.Errorf("after %d attempts: %w", n, err)
		}
		r.log.Warn("fence attempt failed, will retry", "victim", victim.String(), "attempt", n, "retry_in", a.RetryIn, "error", err)
		t := r.clk.NewTimer(a.RetryIn)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("after %d attempts: %w (%w)", n, err, ctx.Err())
		}
	}
}
