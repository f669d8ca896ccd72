package fencetest

import (
	"context"
	"fmt"

	"github.com/shoal-ha/shoal/blockdev"
)

// Initiator is one I_T nexus to a Target. It implements blockdev.Device
// and blockdev.Reservations.
type Initiator struct {
	t    *Target
	id   int
	name string
}

var (
	_ blockdev.Device       = (*Initiator)(nil)
	_ blockdev.Reservations = (*Initiator)(nil)
)

// Name is the name the initiator was opened with.
func (in *Initiator) Name() string { return in.name }

// ReadAt reads from the target unless a reservation forbids it.
func (in *Initiator) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := in.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkRange(p, off); err != nil {
		return err
	}
	if err := t.checkAccess(in.id, false); err != nil {
		return err
	}
	copy(p, t.data[off:])
	return nil
}

// WriteAt writes to the target unless a reservation forbids it, in which
// case it fails with blockdev.ErrReservationConflict and changes nothing.
func (in *Initiator) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := in.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.checkRange(p, off); err != nil {
		return err
	}
	if err := t.checkAccess(in.id, true); err != nil {
		return err
	}
	copy(t.data[off:], p)
	return nil
}

// Flush has nothing to do: the target keeps no cache.
func (in *Initiator) Flush(ctx context.Context) error { return ctx.Err() }

// Size is the target's size in bytes.
func (in *Initiator) Size() int64 { return int64(len(in.t.data)) }

// BlockSize is the target's block size.
func (in *Initiator) BlockSize() int { return in.t.opts.BlockSize }

// Close does nothing: registrations of a closed nexus stay, as they do on
// a target whose initiator went away without logging out.
func (in *Initiator) Close() error { return nil }

// Register is REGISTER AND IGNORE EXISTING KEY; key 0 unregisters.
func (in *Initiator) Register(ctx context.Context, key uint64) error {
	return in.pr(ctx, func(t *Target) error {
		if key == 0 {
			in.unregisterLocked()
			return nil
		}
		t.regs[in.id] = key
		t.generation++
		return nil
	})
}

// pr runs one persistent-reservation command on the target: refused when
// ctx is done or the target fails PR commands, serialised with the rest.
func (in *Initiator) pr(ctx context.Context, cmd func(t *Target) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := in.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.prCommand(); err != nil {
		return err
	}
	return cmd(t)
}

// registeredLocked answers a reservation conflict unless this nexus is
// registered with key.
func (in *Initiator) registeredLocked(key uint64) error {
	if have, ok := in.t.regs[in.id]; !ok || have != key {
		return blockdev.ErrReservationConflict
	}
	return nil
}

// Unregister removes this nexus's registration made with key.
func (in *Initiator) Unregister(ctx context.Context, key uint64) error {
	return in.pr(ctx, func(*Target) error {
		if err := in.registeredLocked(key); err != nil {
			return err
		}
		in.unregisterLocked()
		return nil
	})
}

func (in *Initiator) unregisterLocked() {
	t := in.t
	if _, ok := t.regs[in.id]; !ok {
		return
	}
	delete(t.regs, in.id)
	t.generation++
	t.dropHolderLocked(in.id)
}

// dropHolderLocked releases the reservation when its holder's registration
// went away, for the types where the holder is a single nexus; the
// all-registrants types last while any registrant is left.
func (t *Target) dropHolderLocked(id int) {
	if t.res == nil {
		return
	}
	switch t.res.typ {
	case blockdev.WriteExclusiveAllRegistrants, blockdev.ExclusiveAccessAllRegistrants:
		if len(t.regs) == 0 {
			t.res = nil
		}
	default:
		if t.res.holder == id {
			t.res = nil
		}
	}
}

// Reserve takes a reservation of type typ with key.
func (in *Initiator) Reserve(ctx context.Context, key uint64, typ blockdev.ReservationType) error {
	return in.pr(ctx, func(t *Target) error {
		if err := validType(typ); err != nil {
			return err
		}
		if err := in.registeredLocked(key); err != nil {
			return err
		}
		if t.res != nil {
			if t.res.holder == in.id && t.res.typ == typ {
				return nil
			}
			return blockdev.ErrReservationConflict
		}
		t.res = &reservation{holder: in.id, key: key, typ: typ}
		return nil
	})
}

// Release gives up the reservation if this nexus holds it.
func (in *Initiator) Release(ctx context.Context, key uint64, typ blockdev.ReservationType) error {
	return in.pr(ctx, func(t *Target) error {
		if err := in.registeredLocked(key); err != nil {
			return err
		}
		if t.res == nil || t.res.holder != in.id {
			return nil
		}
		if t.res.typ != typ {
			return fmt.Errorf("fencetest: illegal request: release of type %d, reservation is type %d", typ, t.res.typ)
		}
		t.res = nil
		return nil
	})
}

// Preempt removes every registration made with victim. When victim holds
// the reservation, the reservation moves to this nexus with type typ.
// With no registration of victim the target answers a reservation
// conflict, as SPC-4 says.
func (in *Initiator) Preempt(ctx context.Context, key, victim uint64, typ blockdev.ReservationType, abort bool) error {
	return in.pr(ctx, func(t *Target) error {
		if abort && t.opts.NoPreemptAndAbort {
			return blockdev.ErrNotSupported
		}
		if err := validType(typ); err != nil {
			return err
		}
		if err := in.registeredLocked(key); err != nil {
			return err
		}
		if victim == 0 {
			return fmt.Errorf("fencetest: illegal request: preempt of key 0")
		}
		var removed []int
		for id, k := range t.regs {
			if k == victim && id != in.id {
				removed = append(removed, id)
			}
		}
		if len(removed) == 0 {
			return blockdev.ErrReservationConflict
		}
		for _, id := range removed {
			delete(t.regs, id)
		}
		t.generation++
		if t.res != nil && t.res.key == victim {
			t.res = &reservation{holder: in.id, key: key, typ: typ}
		}
		return nil
	})
}

// Clear removes every registration and the reservation.
func (in *Initiator) Clear(ctx context.Context, key uint64) error {
	return in.pr(ctx, func(t *Target) error {
		if err := in.registeredLocked(key); err != nil {
			return err
		}
		t.regs = map[int]uint64{}
		t.res = nil
		t.generation++
		return nil
	})
}

// ReadKeys lists the registered keys and the generation.
func (in *Initiator) ReadKeys(ctx context.Context) (keys []uint64, gen uint32, err error) {
	err = in.pr(ctx, func(t *Target) error {
		keys, gen = t.keysLocked(), t.generation
		return nil
	})
	return keys, gen, err
}

// ReadReservation reports the reservation.
func (in *Initiator) ReadReservation(ctx context.Context) (res blockdev.Reservation, err error) {
	err = in.pr(ctx, func(t *Target) error {
		res = t.reservationLocked()
		return nil
	})
	return res, err
}
