package recovery

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/internal/attempt"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/keys"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CoordinatorConfig configures a Coordinator.
type CoordinatorConfig struct {
	// Client reaches the cluster's etcd. Required.
	Client *clientv3.Client
	// Lease carries this node's leadership: the election key is attached
	// to it and the coordinator is deposed when it is lost. Normally the
	// node's own membership session, which keeps it alive. Required.
	Lease Lease
	// Prefix is the cluster's etcd key prefix, for example "/shoal".
	Prefix string
	// Self is this node's incarnation. A recovery requested for it means
	// the others think it dead: the coordinator then steps down and Run
	// returns ErrSelfSuspected instead of fencing itself. Required.
	Self fencing.NodeRef
	// Engine configures the recovery engine; its Store is set by the
	// coordinator and must be left nil.
	Engine Config
	// Rescan is how often the elected coordinator re-reads the records,
	// besides watching them. Default 2s.
	Rescan time.Duration
	// FenceSuspect, when set, lets the candidate next in line take over
	// from an elected coordinator whose recovery was requested (the direct
	// failure detector found it silent) without waiting for its lease to
	// expire: the candidate fences it with FenceSuspect, then revokes its
	// lease, which takes its election key away. Only a fence that cuts the
	// suspect off from storage at once (persistent reservations on every
	// leg) makes this faster; any fence keeps it safe. Nil waits for the
	// lease.
	FenceSuspect fencing.Fencer
	// LeaderChanges, when set, ends each etcd write of the coordinator
	// (its campaign, its records, lease revocations) as soon as the etcd
	// leader that Client's member follows changes, so that one caught by
	// the leader's death is sent again at once rather than after its 1s
	// bound. A node passes its embedded member's signal; nil keeps the
	// bound alone.
	LeaderChanges attempt.LeaderChanges
}

// Validate says which field is wrong.
func (c CoordinatorConfig) Validate() error {
	switch {
	case c.Client == nil:
		return fmt.Errorf("recovery: CoordinatorConfig.Client is nil")
	case c.Lease == nil:
		return fmt.Errorf("recovery: CoordinatorConfig.Lease is nil")
	case c.Self.Name == "" || c.Self.Incarnation == "":
		return fmt.Errorf("recovery: CoordinatorConfig.Self must name this node's incarnation")
	case c.Engine.Store != nil:
		return fmt.Errorf("recovery: CoordinatorConfig.Engine.Store must be nil; the coordinator uses etcd")
	case c.Rescan < 0:
		return fmt.Errorf("recovery: CoordinatorConfig.Rescan %v is negative", c.Rescan)
	}
	eng := c.Engine
	eng.Store = &EtcdStore{}
	if err := eng.Validate(); err != nil {
		return fmt.Errorf("recovery: CoordinatorConfig.Engine: %w", err)
	}
	return nil
}

// Coordinator is the etcd shell around Engine. Every node runs one: it
// campaigns for the coordinator election and, while elected, runs every
// unfinished recovery recorded in etcd, several at once, picking up new
// requests through a watch. Any node may Request a recovery.
type Coordinator struct {
	cfg     CoordinatorConfig
	store   *EtcdStore
	clk     clock.Clock
	log     hclog.Logger
	leading atomic.Bool
}

// NewCoordinator checks cfg and returns a coordinator.
func NewCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Rescan == 0 {
		cfg.Rescan = 2 * time.Second
	}
	cfg.Prefix = strings.TrimRight(cfg.Prefix, "/")
	c := &Coordinator{cfg: cfg, store: NewEtcdStore(cfg.Client, cfg.Prefix, cfg.LeaderChanges), clk: cfg.Engine.Clock, log: cfg.Engine.Logger}
	if c.clk == nil {
		c.clk = clock.Real()
	}
	if c.log == nil {
		c.log = hclog.NewNullLogger()
	}
	return c, nil
}

// Request asks for victim's recovery. It only writes the request into
// etcd, so any node may call it (and several may, harmlessly) when the
// failure detector or the membership says victim died; the elected
// coordinator carries it out. created is false if it was already asked for.
func (c *Coordinator) Request(ctx context.Context, victim fencing.NodeRef) (created bool, err error) {
	created, err = c.store.Request(ctx, NewRecord(victim, c.cfg.Engine.Name, c.clk.Now()))
	if err == nil && created {
		c.log.Info("recovery requested", "victim", victim.String())
	}
	return created, err
}

// Leading reports whether this coordinator is the elected one.
func (c *Coordinator) Leading() bool { return c.leading.Load() }

// Run campaigns until elected, then runs recoveries until ctx ends or the
// lease is lost. It returns ErrDeposed when the lease was lost or the
// election key vanished, ErrSelfSuspected when a recovery of this
// incarnation was requested, ErrSelfFenced when fencing a victim showed
// this node's own key gone, ctx's error, or an etcd error from the
// campaign. Recoveries in progress stop where they are; the next
// coordinator resumes them.
//
// Whatever it returns, Run leaves no election key of its own behind while
// the lease stands (it withdraws it, bounded by 1s), so another node can be
// elected at once: a caller that still holds a valid lease should call Run
// again after an error, or the cluster may be left with no coordinator.
func (c *Coordinator) Run(ctx context.Context) error {
	if rec, ok, err := c.store.Load(ctx, c.cfg.Self); err != nil {
		return err
	} else if ok && !rec.Done() {
		return fmt.Errorf("%w: requested by %s", ErrSelfSuspected, rec.RequestedBy)
	}
	var ahead func(context.Context, string)
	if c.cfg.FenceSuspect != nil {
		ahead = c.takeOverFromSuspect
	}
	el, err := campaign(ctx, c.cfg.Client, keys.Of(c.cfg.Prefix).Coordinator(), c.cfg.Lease, c.cfg.Engine.Name, ahead, c.cfg.LeaderChanges)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	c.store.Lead(el.key, el.rev)
	defer c.store.Unlead()
	c.log.Info("elected recovery coordinator", "name", c.cfg.Engine.Name, "key", el.key)

	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	keyGone := el.watchKey(leadCtx)
	var deposed atomic.Value
	go func() {
		select {
		case <-c.cfg.Lease.Lost():
			deposed.Store("lease lost")
		case <-keyGone:
			deposed.Store("election key gone")
		case <-leadCtx.Done():
			return
		}
		cancel()
	}()

	eng := c.cfg.Engine
	eng.Store = c.store
	e, err := NewEngine(eng)
	if err != nil {
		el.withdraw()
		return err
	}
	c.leading.Store(true)
	err = c.lead(leadCtx, e)
	cancel()
	e.Wait()
	c.leading.Store(false)
	if why, ok := deposed.Load().(string); ok {
		c.log.Warn("no longer coordinator", "why", why)
		if why != "lease lost" {
			el.withdraw()
		}
		return fmt.Errorf("%w: %s", ErrDeposed, why)
	}
	// Step down so another node takes over without waiting for this
	// lease to expire.
	if werr := el.withdraw(); werr != nil {
		c.log.Warn("resigning coordinator election", "error", werr)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// takeOverFromSuspect runs while this candidate waits for the coordinator
// key just before its own (holder, "name/incarnation"): once a recovery of
// that incarnation is requested and not yet past its fence, it fences the
// holder and revokes its lease, so the election goes on without waiting
// for the lease to expire. The elected coordinator then runs the recovery
// from its start (fencing again is harmless).
func (c *Coordinator) takeOverFromSuspect(ctx context.Context, holder string) {
	name, inc, ok := strings.Cut(holder, "/")
	if !ok || name == "" || inc == "" {
		return
	}
	ref := fencing.NodeRef{Name: name, Incarnation: inc}
	// The record is watched, so the take-over starts as soon as the
	// request lands (at once after an etcd election that the holder's
	// death caused); the ticker re-reads it should the watch break.
	var wch clientv3.WatchChan
	watch := func() {
		wch = c.cfg.Client.Watch(clientv3.WithRequireLeader(ctx), recordKey(c.cfg.Prefix, ref))
	}
	watch()
	t := c.clk.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for ctx.Err() == nil {
		rec, found, err := c.store.Load(ctx, ref)
		if err == nil && found && !rec.Done() && rec.Finished < StepRecordFence && rec.Victim.LeaseID != 0 {
			c.log.Warn("the coordinator candidate ahead of this one is suspected dead: fencing it to take over", "suspect", holder)
			if err := c.cfg.FenceSuspect.Fence(ctx, rec.Victim); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("fencing the suspected coordinator failed; waiting for its lease", "suspect", holder, "error", err)
				}
				return
			}
			// Revoking the lease deletes the suspect's key, which ends
			// this wait (and ctx) at once: only a revocation that failed
			// while the wait goes on is worth a word.
			if err := c.store.RevokeLease(ctx, rec.Victim.LeaseID); err != nil && ctx.Err() == nil {
				c.log.Warn("revoking the fenced coordinator's lease failed; waiting for it to expire", "suspect", holder, "error", err)
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-t.C():
			if wch == nil {
				watch()
			}
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				wch = nil
			}
		}
	}
}

// lead starts every unfinished recovery and keeps watching for new ones.
func (c *Coordinator) lead(ctx context.Context, e *Engine) error {
	ticker := c.clk.NewTicker(c.cfg.Rescan)
	defer ticker.Stop()
	for ctx.Err() == nil {
		lctx, lcancel := context.WithTimeout(ctx, attemptTimeout)
		recs, rev, err := list(lctx, c.cfg.Client, c.cfg.Prefix)
		lcancel()
		if err != nil {
			c.log.Warn("listing recoveries", "error", err)
		}
		for _, r := range recs {
			if r.Done() {
				continue
			}
			if r.Victim.Name == c.cfg.Self.Name && r.Victim.Incarnation == c.cfg.Self.Incarnation {
				c.log.Error("a recovery of this incarnation was requested, stepping down", "requested_by", r.RequestedBy)
				return fmt.Errorf("%w: requested by %s", ErrSelfSuspected, r.RequestedBy)
			}
			e.Start(ctx, r.Victim)
		}
		if err != nil {
			select {
			case <-ticker.C():
			case <-e.SelfFenced():
				return ErrSelfFenced
			case <-ctx.Done():
			}
			continue
		}
		// Watch from just after the listing until something changes,
		// then list again: nothing requested in between is missed.
		wctx, wcancel := context.WithCancel(ctx)
		wch := c.cfg.Client.Watch(clientv3.WithRequireLeader(wctx), keys.Of(c.cfg.Prefix).Recoveries(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		changed := false
		for !changed && ctx.Err() == nil {
			select {
			case resp, ok := <-wch:
				if !ok || resp.Err() != nil {
					changed = true // rescan; the watch is re-created
					break
				}
				for _, ev := range resp.Events {
					if ev.Type == clientv3.EventTypePut && ev.IsCreate() {
						changed = true
					}
				}
			case <-ticker.C():
				changed = true
			case <-e.SelfFenced():
				wcancel()
				c.log.Error("this node is fenced, stepping down as coordinator")
				return ErrSelfFenced
			case <-ctx.Done():
			}
		}
		wcancel()
	}
	return ctx.Err()
}

// Status returns every recovery record, finished or not.
func (c *Coordinator) Status(ctx context.Context) ([]Record, error) {
	return c.store.List(ctx)
}
