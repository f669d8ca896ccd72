package fencetest

import (
	"fmt"
	"sort"
	"sync"

	"github.com/shoal-ha/shoal/blockdev"
)

// Options shape a Target.
type Options struct {
	// Size of the device in bytes; rounded down to BlockSize. Zero means 1 MiB.
	Size int64
	// BlockSize in bytes. Zero means 512.
	BlockSize int
	// NoPreemptAndAbort makes PREEMPT AND ABORT answer
	// blockdev.ErrNotSupported, as tgtd does.
	NoPreemptAndAbort bool
	// NoReservations makes every reservation command answer
	// blockdev.ErrNotSupported: a leg without persistent reservations.
	NoReservations bool
}

// Target is an in-memory LUN with persistent reservations. It is safe for
// concurrent use.
type Target struct {
	opts Options

	mu         sync.Mutex
	data       []byte
	nextID     int
	regs       map[int]uint64 // initiator id -> registered key
	res        *reservation
	generation uint32
	failErr    error
	commands   int
}

type reservation struct {
	holder int
	key    uint64
	typ    blockdev.ReservationType
}

// NewTarget returns an empty target with no registrations.
func NewTarget(opts Options) *Target {
	if opts.BlockSize == 0 {
		opts.BlockSize = 512
	}
	if opts.Size == 0 {
		opts.Size = 1 << 20
	}
	opts.Size -= opts.Size % int64(opts.BlockSize)
	return &Target{opts: opts, data: make([]byte, opts.Size), regs: map[int]uint64{}}
}

// Initiator opens a new I_T nexus to the target on behalf of name. Every
// call is a new nexus with no registration, like a fresh iSCSI login.
func (t *Target) Initiator(name string) *Initiator {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nextID++
	return &Initiator{t: t, id: t.nextID, name: name}
}

// FailAll makes every later command (I/O and reservations) fail with err,
// as an unreachable leg would; nil heals the target.
func (t *Target) FailAll(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failErr = err
}

// Keys lists the registered keys, sorted, without going through an
// initiator (for test assertions).
func (t *Target) Keys() []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keysLocked()
}

// Reservation reports the reservation for test assertions.
func (t *Target) Reservation() blockdev.Reservation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reservationLocked()
}

// Commands counts the reservation commands served so far.
func (t *Target) Commands() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.commands
}

// Bytes returns a copy of the device contents.
func (t *Target) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.data...)
}

func (t *Target) keysLocked() []uint64 {
	keys := make([]uint64, 0, len(t.regs))
	for _, k := range t.regs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

func (t *Target) reservationLocked() blockdev.Reservation {
	if t.res == nil {
		return blockdev.Reservation{}
	}
	return blockdev.Reservation{Held: true, Key: t.res.key, Type: t.res.typ}
}

// prCommand is the common prologue of every reservation command.
func (t *Target) prCommand() error {
	t.commands++
	if t.failErr != nil {
		return t.failErr
	}
	if t.opts.NoReservations {
		return blockdev.ErrNotSupported
	}
	return nil
}

// checkAccess applies the reservation rules of SPC-4 table 47 to a read
// or write from initiator id.
func (t *Target) checkAccess(id int, write bool) error {
	if t.failErr != nil {
		return t.failErr
	}
	if t.res == nil || t.res.holder == id {
		return nil
	}
	_, registered := t.regs[id]
	switch t.res.typ {
	case blockdev.WriteExclusive:
		if write {
			return blockdev.ErrReservationConflict
		}
	case blockdev.ExclusiveAccess:
		return blockdev.ErrReservationConflict
	case blockdev.WriteExclusiveRegistrantsOnly, blockdev.WriteExclusiveAllRegistrants:
		if write && !registered {
			return blockdev.ErrReservationConflict
		}
	case blockdev.ExclusiveAccessRegistrantsOnly, blockdev.ExclusiveAccessAllRegistrants:
		if !registered {
			return blockdev.ErrReservationConflict
		}
	}
	return nil
}

func (t *Target) checkRange(p []byte, off int64) error {
	bs := int64(t.opts.BlockSize)
	if off%bs != 0 || int64(len(p))%bs != 0 {
		return blockdev.ErrUnaligned
	}
	if off < 0 || off+int64(len(p)) > int64(len(t.data)) {
		return blockdev.ErrOutOfRange
	}
	return nil
}

func validType(typ blockdev.ReservationType) error {
	switch typ {
	case blockdev.WriteExclusive, blockdev.ExclusiveAccess,
		blockdev.WriteExclusiveRegistrantsOnly, blockdev.ExclusiveAccessRegistrantsOnly,
		blockdev.WriteExclusiveAllRegistrants, blockdev.ExclusiveAccessAllRegistrants:
		return nil
	}
	return fmt.Errorf("fencetest: illegal request: reservation type %d", typ)
}
