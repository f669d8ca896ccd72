package fencing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/blockdev"
)

// ReservationType is the reservation every Shoal volume holds: Write
// Exclusive - Registrants Only. Every live node is a registrant and may
// write; a node whose key was preempted may not.
const ReservationType = blockdev.WriteExclusiveRegistrantsOnly

// Leg is one mirror leg that supports persistent reservations.
type Leg struct {
	// Name identifies the leg in logs and errors (its address).
	Name string
	// Dev is this node's connection to the leg.
	Dev blockdev.Reservations
}

// LegsOf returns, in order, the devices among devs that have the
// persistent-reservation ability. names[i] names devs[i].
func LegsOf(names []string, devs []blockdev.Device) []Leg {
	var legs []Leg
	for i, d := range devs {
		if r, ok := d.(blockdev.Reservations); ok {
			legs = append(legs, Leg{Name: names[i], Dev: r})
		}
	}
	return legs
}

// LegsByIndex returns the devices of devs (leg index -> device, as the
// mirror's LegDevices gives them) that have the persistent-reservation
// ability, ordered by index and named "leg<index>".
func LegsByIndex(devs map[int]blockdev.Device) []Leg {
	idx := make([]int, 0, len(devs))
	for i := range devs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	var legs []Leg
	for _, i := range idx {
		if r, ok := devs[i].(blockdev.Reservations); ok {
			legs = append(legs, Leg{Name: fmt.Sprintf("leg%d", i), Dev: r})
		}
	}
	return legs
}

// ReservationConfig configures a ReservationFencer.
type ReservationConfig struct {
	// Self is this node's incarnation; Self.Key is the key it registers.
	Self NodeRef
	// Legs returns the legs of the volume that this node can reach and
	// that may support reservations. It is called on every Join and Fence,
	// so a leg that failed and was removed from the mirror stops counting.
	Legs func() []Leg
	// NoPreemptAndAbort skips PREEMPT AND ABORT and sends plain PREEMPT.
	// Without it the fencer asks for PREEMPT AND ABORT first (which also
	// aborts the victim's queued commands) and falls back to PREEMPT on a
	// leg that answers blockdev.ErrNotSupported, as tgtd does.
	NoPreemptAndAbort bool
	// Logger receives one line per leg and action. Nil discards.
	Logger hclog.Logger
}

// Validate says which field is wrong.
func (c ReservationConfig) Validate() error {
	if err := c.Self.Validate(); err != nil {
		return fmt.Errorf("fencing: ReservationConfig.Self: %w", err)
	}
	if c.Legs == nil {
		return fmt.Errorf("fencing: ReservationConfig.Legs is nil")
	}
	return nil
}

// ReservationFencer fences with SCSI-3 persistent reservations. Every live
// node registers its own key on every leg (Join) and the volume holds a
// Write Exclusive - Registrants Only reservation; fencing a node preempts
// its key on every leg, after which the targets refuse its writes with a
// reservation conflict.
//
// Legs without reservations (blockdev.ErrNotSupported) are skipped: a
// ReservationFencer does not protect them, so a volume mixing such legs
// must also wait for the lease (see All and LeaseFencer).
type ReservationFencer struct {
	cfg ReservationConfig
	log hclog.Logger

	mu      sync.Mutex
	noAbort map[string]bool // legs known to lack PREEMPT AND ABORT
}

// NewReservationFencer checks cfg and returns the fencer.
func NewReservationFencer(cfg ReservationConfig) (*ReservationFencer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &ReservationFencer{cfg: cfg, log: log, noAbort: map[string]bool{}}, nil
}

// Join registers this incarnation's key on every leg and makes sure each
// leg holds the Write Exclusive - Registrants Only reservation. Call it
// when the incarnation starts, before its first write.
//
// Join re-registers even when the key was preempted, so it must only be
// called while the incarnation's lease is known to be alive: after a
// reconnect to a target (tgtd drops registrations with the login
// session) the daemon calls it only if its self-fence deadline has not
// passed, and otherwise starts a new incarnation.
func (f *ReservationFencer) Join(ctx context.Context) error {
	return f.eachLeg(ctx, func(ctx context.Context, leg Leg) error {
		if err := leg.Dev.Register(ctx, f.cfg.Self.Key); err != nil {
			return fmt.Errorf("register: %w", err)
		}
		f.log.Debug("registered key", "leg", leg.Name, "key", keyHex(f.cfg.Self.Key))
		return f.ensureReserved(ctx, leg)
	}, "join")
}

// Leave removes this incarnation's key from every leg, for a clean
// shutdown. If this node held a leg's reservation the target drops it; the
// surviving nodes put it back with EnsureReserved.
func (f *ReservationFencer) Leave(ctx context.Context) error {
	return f.eachLeg(ctx, func(ctx context.Context, leg Leg) error {
		err := leg.Dev.Unregister(ctx, f.cfg.Self.Key)
		if errors.Is(err, blockdev.ErrReservationConflict) {
			return nil // not registered: nothing to leave
		}
		return err
	}, "leave")
}

// EnsureReserved puts the reservation back on any leg that lost it (its
// holder left), provided this node is still registered there. A live
// node calls it after a member leaves the cluster.
func (f *ReservationFencer) EnsureReserved(ctx context.Context) error {
	return f.eachLeg(ctx, func(ctx context.Context, leg Leg) error {
		if err := f.checkRegistered(ctx, leg); err != nil {
			return err
		}
		return f.ensureReserved(ctx, leg)
	}, "ensure reservation")
}

// CheckSelf reports ErrFenced when this incarnation's key is missing from
// a leg: the cluster fenced it. The daemon calls it when a write fails
// with blockdev.ErrReservationConflict.
func (f *ReservationFencer) CheckSelf(ctx context.Context) error {
	return f.eachLeg(ctx, f.checkRegistered, "check")
}

// Fence preempts victim's key on every leg and verifies with READ KEYS
// that it is gone. A key that is already gone counts as fenced.
func (f *ReservationFencer) Fence(ctx context.Context, victim NodeRef) error {
	if victim.Key == 0 {
		return fmt.Errorf("%w: %s: victim has no reservation key", ErrFenceFailed, victim)
	}
	if victim.Key == f.cfg.Self.Key {
		return fmt.Errorf("%w: %s", ErrFenceSelf, victim)
	}
	err := f.eachLeg(ctx, func(ctx context.Context, leg Leg) error {
		return f.fenceLeg(ctx, leg, victim)
	}, "fence")
	if err != nil {
		if errors.Is(err, ErrFenced) || errors.Is(err, ErrNoReservationLegs) {
			return err
		}
		return fmt.Errorf("%w: %s: %w", ErrFenceFailed, victim, err)
	}
	f.log.Info("victim key preempted on every leg", "victim", victim.String(), "key", keyHex(victim.Key))
	return nil
}

func (f *ReservationFencer) fenceLeg(ctx context.Context, leg Leg, victim NodeRef) error {
	keys, _, err := leg.Dev.ReadKeys(ctx)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	if !slices.Contains(keys, f.cfg.Self.Key) {
		return fmt.Errorf("%w: own key %s missing", ErrFenced, keyHex(f.cfg.Self.Key))
	}
	if slices.Contains(keys, victim.Key) {
		if err := f.preempt(ctx, leg, victim.Key); err != nil {
			// A conflict may mean another coordinator preempted the
			// key first; READ KEYS below decides.
			if !errors.Is(err, blockdev.ErrReservationConflict) {
				return fmt.Errorf("preempt: %w", err)
			}
			f.log.Debug("preempt answered conflict, verifying", "leg", leg.Name, "victim", victim.String())
		}
		keys, _, err = leg.Dev.ReadKeys(ctx)
		if err != nil {
			return fmt.Errorf("read keys after preempt: %w", err)
		}
		if !slices.Contains(keys, f.cfg.Self.Key) {
			return fmt.Errorf("%w: own key %s missing after preempt", ErrFenced, keyHex(f.cfg.Self.Key))
		}
		if slices.Contains(keys, victim.Key) {
			return fmt.Errorf("victim key %s still registered after preempt", keyHex(victim.Key))
		}
		f.log.Info("preempted victim key", "leg", leg.Name, "victim", victim.String(), "key", keyHex(victim.Key))
	} else {
		f.log.Debug("victim key already gone", "leg", leg.Name, "victim", victim.String())
	}
	// With no reservation at all any initiator may write: make sure the
	// leg is reserved before calling the victim fenced.
	return f.ensureReserved(ctx, leg)
}

func (f *ReservationFencer) preempt(ctx context.Context, leg Leg, victim uint64) error {
	f.mu.Lock()
	abort := !f.cfg.NoPreemptAndAbort && !f.noAbort[leg.Name]
	f.mu.Unlock()
	if abort {
		err := leg.Dev.Preempt(ctx, f.cfg.Self.Key, victim, ReservationType, true)
		if !errors.Is(err, blockdev.ErrNotSupported) {
			return err
		}
		f.log.Debug("leg lacks PREEMPT AND ABORT, using PREEMPT", "leg", leg.Name)
		f.mu.Lock()
		f.noAbort[leg.Name] = true
		f.mu.Unlock()
	}
	return leg.Dev.Preempt(ctx, f.cfg.Self.Key, victim, ReservationType, false)
}

func (f *ReservationFencer) checkRegistered(ctx context.Context, leg Leg) error {
	keys, _, err := leg.Dev.ReadKeys(ctx)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	if !slices.Contains(keys, f.cfg.Self.Key) {
		return fmt.Errorf("%w: own key %s missing", ErrFenced, keyHex(f.cfg.Self.Key))
	}
	return nil
}

// ensureReserved reserves the leg if nobody holds a reservation. Two
// nodes may race here; the loser sees a conflict and then the winner's
// reservation, which is as good as its own.
func (f *ReservationFencer) ensureReserved(ctx context.Context, leg Leg) error {
	for range 3 {
		res, err := leg.Dev.ReadReservation(ctx)
		if err != nil {
			return fmt.Errorf("read reservation: %w", err)
		}
		if res.Held {
			if res.Type != ReservationType {
				return fmt.Errorf("%w: type %d held with key %s", ErrReservationMismatch, res.Type, keyHex(res.Key))
			}
			return nil
		}
		err = leg.Dev.Reserve(ctx, f.cfg.Self.Key, ReservationType)
		if err == nil {
			f.log.Info("reserved leg", "leg", leg.Name, "type", int(ReservationType), "key", keyHex(f.cfg.Self.Key))
			return nil
		}
		if !errors.Is(err, blockdev.ErrReservationConflict) {
			return fmt.Errorf("reserve: %w", err)
		}
	}
	return fmt.Errorf("reserve: reservation keeps changing")
}

// eachLeg runs fn on every leg in parallel. Legs answering
// blockdev.ErrNotSupported are skipped; if every leg does, the result is
// ErrNoReservationLegs.
func (f *ReservationFencer) eachLeg(ctx context.Context, fn func(context.Context, Leg) error, what string) error {
	legs := f.cfg.Legs()
	errs := make([]error, len(legs))
	var wg sync.WaitGroup
	for i, leg := range legs {
		wg.Go(func() { errs[i] = fn(ctx, leg) })
	}
	wg.Wait()
	supported := 0
	var failed []error
	for i, err := range errs {
		switch {
		case errors.Is(err, blockdev.ErrNotSupported):
			f.log.Debug("leg has no persistent reservations", "leg", legs[i].Name, "action", what)
		case err != nil:
			supported++
			f.log.Warn("reservation action failed", "leg", legs[i].Name, "action", what, "error", err)
			failed = append(failed, fmt.Errorf("leg %s: %w", legs[i].Name, err))
		default:
			supported++
		}
	}
	if supported == 0 {
		return fmt.Errorf("%w (%s over %d legs)", ErrNoReservationLegs, what, len(legs))
	}
	return errors.Join(failed...)
}

func keyHex(k uint64) string { return fmt.Sprintf("%#016x", k) }
