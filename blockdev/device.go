package blockdev

import (
	"context"
	"errors"
	"fmt"
)

// Device is a block device: a fixed-size array of bytes addressed by offset.
// Offsets and lengths of ReadAt and WriteAt are multiples of BlockSize.
// Implementations are safe for concurrent use.
type Device interface {
	// ReadAt reads len(p) bytes at byte offset off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes len(p) bytes at byte offset off. When it returns nil the
	// data is on the device but not necessarily durable until Flush. It
	// does not keep p once it returned nil (as io.WriterAt): callers
	// reuse their buffers.
	WriteAt(ctx context.Context, p []byte, off int64) error
	// Flush makes every completed write durable.
	Flush(ctx context.Context) error
	// Size is the device's size in bytes.
	Size() int64
	// BlockSize is the device's logical block size in bytes.
	BlockSize() int
	// Close releases the device. Outstanding calls fail with ErrClosed.
	Close() error
}

// Trimmer is a device that can discard a byte range.
type Trimmer interface {
	Trim(ctx context.Context, off, length int64) error
}

// Reservations is a device with SCSI-3 persistent reservations. Keys are
// 8-byte registration keys written as uint64.
type Reservations interface {
	// Register registers key for this initiator, replacing any key it had
	// (REGISTER AND IGNORE EXISTING KEY).
	Register(ctx context.Context, key uint64) error
	// Unregister removes this initiator's registration.
	Unregister(ctx context.Context, key uint64) error
	// Reserve takes a reservation of the given type with key.
	Reserve(ctx context.Context, key uint64, typ ReservationType) error
	// Release gives up the reservation held with key.
	Release(ctx context.Context, key uint64, typ ReservationType) error
	// Preempt removes victim's registration (and reservation) using key.
	// abort asks for PREEMPT AND ABORT; a target without it answers
	// ErrNotSupported.
	Preempt(ctx context.Context, key, victim uint64, typ ReservationType, abort bool) error
	// Clear removes every registration and the reservation.
	Clear(ctx context.Context, key uint64) error
	// ReadKeys lists the registered keys and the PR generation.
	ReadKeys(ctx context.Context) (keys []uint64, generation uint32, err error)
	// ReadReservation reports the current reservation, if any.
	ReadReservation(ctx context.Context) (Reservation, error)
}

// ReservationType is the SCSI-3 persistent reservation type code.
type ReservationType uint8

// Reservation types from SPC-4.
const (
	WriteExclusive                 ReservationType = 1
	ExclusiveAccess                ReservationType = 3
	WriteExclusiveRegistrantsOnly  ReservationType = 5
	ExclusiveAccessRegistrantsOnly ReservationType = 6
	WriteExclusiveAllRegistrants   ReservationType = 7
	ExclusiveAccessAllRegistrants  ReservationType = 8
)

// Reservation is the reservation held on a device.
type Reservation struct {
	Held bool
	Key  uint64
	Type ReservationType
}

// Errors shared by every backend.
var (
	// ErrClosed: the device was closed. Not retriable on this handle.
	ErrClosed = errors.New("blockdev: device closed")
	// ErrOutOfRange: offset or length beyond the device. Not retriable.
	ErrOutOfRange = errors.New("blockdev: access out of range")
	// ErrUnaligned: offset or length not a multiple of the block size.
	ErrUnaligned = errors.New("blockdev: unaligned access")
	// ErrIO: the device reported an I/O error. A read may be retried on
	// another leg; a failed write leaves the range's contents unknown.
	ErrIO = errors.New("blockdev: I/O error")
	// ErrReservationConflict: the device refused the command because of a
	// persistent reservation (this initiator was fenced). Never retry.
	ErrReservationConflict = errors.New("blockdev: reservation conflict")
	// ErrWriteOutcomeUnknown: a write was sent but its completion was lost
	// (connection dropped). The range may hold old or new data; the write
	// is neither done nor safe to blindly report as failed.
	ErrWriteOutcomeUnknown = errors.New("blockdev: write outcome unknown")
	// ErrFenced: this node may no longer do I/O to the device (it fenced
	// itself, or was fenced). Not a fault of the device: a mirror must not
	// fail the leg for it. Never retry on this incarnation.
	ErrFenced = errors.New("blockdev: I/O refused: this node is fenced")
	// ErrNotSupported: the device lacks the optional ability asked for.
	ErrNotSupported = errors.New("blockdev: not supported by device")
	// ErrReadOnly: the device was opened read-only (OpenOptions.ReadOnly)
	// and the call would change it (a write, or a persistent reservation
	// change). Nothing was sent or written. Not retriable on this handle.
	// It also matches ErrNotSupported.
	ErrReadOnly = fmt.Errorf("blockdev: device opened read-only: %w", ErrNotSupported)
)
