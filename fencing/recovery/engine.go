package recovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Config configures an Engine.
type Config struct {
	// Name identifies this coordinator in records ("node1/<incarnation>").
	Name string
	// Store keeps the records. Required.
	Store Store
	// Fencer fences victims: a fencing.Chain or a single method. Required.
	// The engine retries it itself, so it should not be wrapped in
	// fencing.Retrying.
	Fencer fencing.Fencer
	// Hooks carry out journal replay, resync and lock release. Required.
	Hooks Hooks
	// Backoff paces the retries of a failing step and of failed saves.
	Backoff fencing.Backoff
	// Clock measures back-off and stamps records. Nil means real time.
	Clock clock.Clock
	// Logger receives one line per step. Nil discards.
	Logger hclog.Logger
	// OnProgress, when set, sees the record after every saved change:
	// the feed for `shoald status` and metrics.
	OnProgress func(Record)
	// OnFenceAttempt, when set, sees every fence attempt (for
	// fencing.Metrics.Observe).
	OnFenceAttempt func(fencing.Attempt)
	// StepReportAfter bounds how long a step runs silently: past it, and
	// again after every further StepReportAfter, the engine logs what the
	// step waits for (Waits) and records it in the recovery record
	// (Record.Waiting), where `lockctl recoveries`, `shoald status` and
	// /api/recoveries show it. Zero turns reports off. Default 5s.
	StepReportAfter time.Duration
	// Waits, when set, describes what a running step waits for.
	Waits WaitsFunc
}

// DefaultConfig returns a configuration with the default back-off; the
// caller fills in Name, Store, Fencer and Hooks.
func DefaultConfig() Config {
	return Config{Backoff: fencing.DefaultBackoff(), StepReportAfter: 5 * time.Second}
}

// Validate says which field is wrong.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("recovery: Config.Name is empty")
	case c.Store == nil:
		return fmt.Errorf("recovery: Config.Store is nil")
	case c.Fencer == nil:
		return fmt.Errorf("recovery: Config.Fencer is nil")
	case c.Hooks == nil:
		return fmt.Errorf("recovery: Config.Hooks is nil")
	case c.StepReportAfter < 0:
		return fmt.Errorf("recovery: Config.StepReportAfter %v is negative", c.StepReportAfter)
	}
	if err := c.Backoff.Validate(); err != nil {
		return fmt.Errorf("recovery: Config.Backoff: %w", err)
	}
	return nil
}

// Engine runs recoveries in the order of the design, one goroutine per
// victim, recording each finished step in the Store so that another
// coordinator can resume where this one stopped.
type Engine struct {
	cfg Config
	clk clock.Clock
	log hclog.Logger

	mu         sync.Mutex
	running    map[string]*run
	wg         sync.WaitGroup
	selfFenced chan struct{}
	fencedOnce sync.Once
}

type run struct {
	done chan struct{}
	rec  Record
	err  error
}

// NewEngine checks cfg and returns an engine.
func NewEngine(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, running: map[string]*run{}, selfFenced: make(chan struct{})}
	if e.clk == nil {
		e.clk = clock.Real()
	}
	if e.log == nil {
		e.log = hclog.NewNullLogger()
	}
	return e, nil
}

// Start runs victim's recovery in the background unless it is already
// running here. The returned channel is closed when that run ends.
func (e *Engine) Start(ctx context.Context, victim fencing.NodeRef) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := victim.String()
	if r, ok := e.running[k]; ok {
		select {
		case <-r.done:
		default:
			return r.done
		}
	}
	r := &run{done: make(chan struct{})}
	e.running[k] = r
	e.wg.Go(func() {
		rec, err := e.Run(ctx, victim)
		e.mu.Lock()
		r.rec, r.err = rec, err
		e.mu.Unlock()
		close(r.done)
	})
	return r.done
}

// SelfFenced is closed once a run found this coordinator fenced itself
// (ErrSelfFenced): it must stop coordinating and its node must rejoin.
func (e *Engine) SelfFenced() <-chan struct{} { return e.selfFenced }

// Wait blocks until every recovery started with Start has ended.
func (e *Engine) Wait() { e.wg.Wait() }

// Result returns the outcome of victim's last run started with Start.
func (e *Engine) Result(victim fencing.NodeRef) (Record, error, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.running[victim.String()]
	if !ok {
		return Record{}, nil, false
	}
	select {
	case <-r.done:
		return r.rec, r.err, true
	default:
		return Record{}, nil, false
	}
}

// Run carries victim's recovery from its last recorded step to the end.
// It returns when the recovery is done, when ctx ends, when this
// coordinator is deposed (ErrDeposed) or finds itself fenced
// (ErrSelfFenced). A failing step is retried with back-off for as long as
// ctx allows; no later step runs before it succeeds.
func (e *Engine) Run(ctx context.Context, victim fencing.NodeRef) (Record, error) {
	if err := ValidateVictim(victim); err != nil {
		return Record{}, err
	}
	log := e.log.With("victim", victim.String())
	rec, ok, err := e.load(ctx, victim)
	if err != nil {
		return rec, err
	}
	if !ok {
		rec = NewRecord(victim, e.cfg.Name, e.clk.Now())
	}
	if rec.Done() {
		return rec, nil
	}
	if rec.Coordinator != e.cfg.Name {
		if rec.Coordinator != "" {
			log.Info("resuming recovery", "finished", rec.Finished.String(), "previous_coordinator", rec.Coordinator)
		}
		rec = rec.TakeOver(e.cfg.Name, e.clk.Now())
		if err := e.save(ctx, rec, nil); err != nil {
			return rec, err
		}
	}
	for !rec.Done() {
		if err := ctx.Err(); err != nil {
			return rec, err
		}
		step := rec.Next()
		log.Debug("running step", "step", step.String(), "attempt", rec.Attempts+1)
		var fence *FenceRecord
		stopReports := e.reportWhileRunning(ctx, step, rec, log)
		out, err := e.exec(ctx, step, rec)
		stopReports()
		now := e.clk.Now()
		if err == nil {
			if step == StepRecordFence {
				f := rec.Fence(e.cfg.Name, now)
				fence = &f
			}
			next, ferr := rec.FinishWith(step, e.cfg.Name, out, now)
			if ferr != nil {
				return rec, ferr
			}
			if err := e.save(ctx, next, fence); err != nil {
				return rec, err
			}
			rec = next
			log.Debug("recovery step finished", "step", step.String(), "took", rec.History[len(rec.History)-1].Took)
			continue
		}
		if ctx.Err() != nil {
			return rec, fmt.Errorf("%s: %w", step, ctx.Err())
		}
		next, ferr := rec.Fail(step, e.cfg.Name, err, now)
		if ferr != nil {
			return rec, ferr
		}
		if serr := e.save(ctx, next, nil); serr != nil {
			return rec, serr
		}
		rec = next
		if step == StepFence && !fencing.Retriable(err) {
			log.Error("coordinator cannot fence: it is fenced itself", "error", err)
			e.fencedOnce.Do(func() { close(e.selfFenced) })
			return rec, fmt.Errorf("%w: %w", ErrSelfFenced, err)
		}
		wait := e.cfg.Backoff.Delay(rec.Attempts)
		log.Warn("recovery step failed, will retry", "step", step.String(), "attempt", rec.Attempts, "retry_in", wait, "error", err)
		if err := e.sleep(ctx, wait); err != nil {
			return rec, err
		}
	}
	log.Debug("recovery done", "took", rec.Updated.Sub(rec.Requested))
	return rec, nil
}

// reportWhileRunning reports what step waits for every StepReportAfter
// until the returned function is called; that function returns once no
// report is being made any more, so the step's own save comes last.
func (e *Engine) reportWhileRunning(ctx context.Context, step Step, rec Record, log hclog.Logger) (stop func()) {
	every := e.cfg.StepReportAfter
	if every <= 0 {
		return func() {}
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t := e.clk.NewTimer(every)
	go func() {
		defer close(done)
		defer t.Stop()
		began := e.clk.Now()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C():
			}
			var waits []Wait
			if e.cfg.Waits != nil {
				waits = e.cfg.Waits(rec.Victim, step)
			}
			if len(waits) == 0 {
				waits = []Wait{{What: step.String(), Detail: "the step's owner did not say what it waits for"}}
			}
			now := e.clk.Now()
			log.Warn("recovery step still running", "step", step.String(), "running_for", now.Sub(began), "waiting_for", strings.Join(waitStrings(waits), "; "))
			if next, err := rec.Report(step, e.cfg.Name, waits, now); err == nil {
				if err := e.cfg.Store.Save(rctx, next, nil); err == nil {
					if e.cfg.OnProgress != nil {
						e.cfg.OnProgress(next)
					}
				} else if rctx.Err() == nil {
					log.Debug("cannot record what the step waits for", "error", err)
				}
			}
			t.Reset(every)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

func (e *Engine) exec(ctx context.Context, step Step, rec Record) (Outcome, error) {
	v := rec.Victim
	oh, withOutcome := e.cfg.Hooks.(OutcomeHooks)
	switch step {
	case StepFence:
		start := e.clk.Now()
		var out Outcome
		var err error
		if of, ok := e.cfg.Fencer.(OutcomeFencer); ok {
			out, err = of.FenceOutcome(ctx, v)
		} else {
			err = e.cfg.Fencer.Fence(ctx, v)
		}
		if e.cfg.OnFenceAttempt != nil {
			a := fencing.Attempt{Victim: v, Number: rec.Attempts + 1, Err: err, Took: e.clk.Since(start)}
			if err != nil && fencing.Retriable(err) {
				a.RetryIn = e.cfg.Backoff.Delay(rec.Attempts + 1)
			}
			e.cfg.OnFenceAttempt(a)
		}
		return out, err
	case StepRecordFence:
		// The lease goes first: once the record says this step is done,
		// nobody revokes it again.
		if v.LeaseID == 0 {
			return Outcome{Method: "no lease to revoke"}, nil
		}
		return Outcome{Method: "lease revoked"}, e.cfg.Store.RevokeLease(ctx, v.LeaseID)
	case StepReplayJournal:
		if withOutcome {
			return oh.ReplayJournalOutcome(ctx, v)
		}
		return Outcome{}, e.cfg.Hooks.ReplayJournal(ctx, v)
	case StepResync:
		if withOutcome {
			return oh.ResyncBitmapOutcome(ctx, v)
		}
		return Outcome{}, e.cfg.Hooks.ResyncBitmap(ctx, v)
	case StepReleaseLocks:
		if withOutcome {
			return oh.ReleaseLocksOutcome(ctx, v)
		}
		return Outcome{}, e.cfg.Hooks.ReleaseLocks(ctx, v)
	case StepDone:
		return Outcome{}, nil
	}
	return Outcome{}, fmt.Errorf("%w: no step %d", ErrOutOfOrder, int(step))
}

// load reads the record, retrying store errors with back-off.
func (e *Engine) load(ctx context.Context, victim fencing.NodeRef) (Record, bool, error) {
	for n := 1; ; n++ {
		rec, ok, err := e.cfg.Store.Load(ctx, victim)
		if err == nil {
			return rec, ok, nil
		}
		if ctx.Err() != nil {
			return rec, false, err
		}
		e.log.Warn("cannot load recovery record, will retry", "victim", victim.String(), "error", err)
		if err := e.sleep(ctx, e.cfg.Backoff.Delay(n)); err != nil {
			return rec, false, err
		}
	}
}

// save writes the record, retrying store errors except ErrDeposed. A
// recovery cannot go on without its record, so there is no giving up
// short of ctx.
func (e *Engine) save(ctx context.Context, rec Record, fence *FenceRecord) error {
	for n := 1; ; n++ {
		err := e.cfg.Store.Save(ctx, rec, fence)
		if err == nil {
			if e.cfg.OnProgress != nil {
				e.cfg.OnProgress(rec)
			}
			return nil
		}
		if errors.Is(err, ErrDeposed) {
			e.log.Warn("deposed, leaving the recovery to the new coordinator", "victim", rec.Victim.String(), "finished", rec.Finished.String())
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		e.log.Warn("cannot save recovery record, will retry", "victim", rec.Victim.String(), "error", err)
		if err := e.sleep(ctx, e.cfg.Backoff.Delay(n)); err != nil {
			return err
		}
	}
}

func (e *Engine) sleep(ctx context.Context, d time.Duration) error {
	t := e.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
