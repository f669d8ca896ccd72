package iscsi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/scsi"
)

// Device is an iSCSI logical unit as a blockdev.Device with the
// persistent reservation ability (blockdev.Reservations).
type Device struct {
	s         *Session
	lun       uint64
	blockSize int
	size      int64
	maxXfer   int
	closed    atomic.Bool
}

var (
	_ blockdev.Device       = (*Device)(nil)
	_ blockdev.Reservations = (*Device)(nil)
)

// Open logs into cfg.Target and opens cfg.LUN as a device. The LUN must
// be a direct-access block device.
func Open(ctx context.Context, cfg Config) (*Device, error) {
	s, err := Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	d, err := openLUN(ctx, s, cfg.LUN)
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	return d, nil
}

func openLUN(ctx context.Context, s *Session, lun uint64) (*Device, error) {
	// The first command after login usually meets a unit attention
	// (power on / reset); run retries it.
	if err := s.TestUnitReady(ctx, lun); err != nil {
		return nil, fmt.Errorf("iscsi: LUN %d not ready: %w", lun, err)
	}
	inq, err := s.Inquiry(ctx, lun)
	if err != nil {
		return nil, fmt.Errorf("iscsi: INQUIRY of LUN %d: %w", lun, err)
	}
	if inq.PeripheralQualifier != 0 || inq.DeviceType != scsi.TypeDisk {
		return nil, fmt.Errorf("iscsi: LUN %d is a %s, not a disk: %w", lun, scsi.TypeName(inq.DeviceType), blockdev.ErrNotSupported)
	}
	capa, err := s.ReadCapacity(ctx, lun)
	if err != nil {
		return nil, fmt.Errorf("iscsi: READ CAPACITY of LUN %d: %w", lun, err)
	}
	d := &Device{s: s, lun: lun, blockSize: int(capa.BlockLength), size: int64(capa.Bytes()), maxXfer: s.cfg.MaxTransfer}
	if maxBlocks, _, err := s.BlockLimits(ctx, lun); err == nil && maxBlocks > 0 {
		if lim := int64(maxBlocks) * int64(d.blockSize); lim < int64(d.maxXfer) {
			d.maxXfer = int(lim)
		}
	}
	d.maxXfer -= d.maxXfer % d.blockSize
	if d.maxXfer < d.blockSize {
		d.maxXfer = d.blockSize
	}
	return d, nil
}

// Session returns the device's session (for inquiries and tests).
func (d *Device) Session() *Session { return d.s }

// Size is the LUN's size in bytes.
func (d *Device) Size() int64 { return d.size }

// BlockSize is the LUN's logical block size.
func (d *Device) BlockSize() int { return d.blockSize }

func (d *Device) check(n int, off int64) error {
	if d.closed.Load() {
		return blockdev.ErrClosed
	}
	bs := int64(d.blockSize)
	if off%bs != 0 || int64(n)%bs != 0 {
		return fmt.Errorf("%w: %d bytes at %d with %d-byte blocks", blockdev.ErrUnaligned, n, off, bs)
	}
	if off < 0 || off+int64(n) > d.size {
		return fmt.Errorf("%w: %d bytes at %d of %d", blockdev.ErrOutOfRange, n, off, d.size)
	}
	return nil
}

// split runs fn over chunks of at most maxXfer bytes, concurrently, and
// returns the first error.
func (d *Device) split(p []byte, off int64, fn func(chunk []byte, lba uint64) error) error {
	if len(p) <= d.maxXfer {
		return fn(p, uint64(off)/uint64(d.blockSize))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := 0; i < len(p); i += d.maxXfer {
		end := min(i+d.maxXfer, len(p))
		wg.Add(1)
		go func(chunk []byte, lba uint64) {
			defer wg.Done()
			if err := fn(chunk, lba); err != nil {
				mu.Lock()
				// An unknown write outcome outranks other errors: the
				// caller must learn that some range may have changed.
				if first == nil || blockdevUnknown(err) && !blockdevUnknown(first) {
					first = err
				}
				mu.Unlock()
			}
		}(p[i:end], uint64(off+int64(i))/uint64(d.blockSize))
	}
	wg.Wait()
	return first
}

// ReadAt reads len(p) bytes at off.
func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := d.check(len(p), off); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	return d.split(p, off, func(chunk []byte, lba uint64) error {
		return d.s.Read(ctx, d.lun, lba, uint32(len(chunk)/d.blockSize), chunk)
	})
}

// WriteAt writes p at off. A write whose completion was lost returns an
// error matching blockdev.ErrWriteOutcomeUnknown.
func (d *Device) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := d.check(len(p), off); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	return d.split(p, off, func(chunk []byte, lba uint64) error {
		return d.s.Write(ctx, d.lun, lba, uint32(len(chunk)/d.blockSize), chunk)
	})
}

// Flush sends SYNCHRONIZE CACHE (nothing on a read-only device).
func (d *Device) Flush(ctx context.Context) error {
	if d.closed.Load() {
		return blockdev.ErrClosed
	}
	if d.s.cfg.ReadOnly {
		return nil
	}
	return d.s.SynchronizeCache(ctx, d.lun)
}

// Close logs out.
func (d *Device) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	return d.s.Close()
}

// Register implements blockdev.Reservations.
func (d *Device) Register(ctx context.Context, key uint64) error {
	return d.s.Register(ctx, d.lun, key)
}

// Unregister implements blockdev.Reservations.
func (d *Device) Unregister(ctx context.Context, key uint64) error {
	return d.s.Unregister(ctx, d.lun, key)
}

// Reserve implements blockdev.Reservations.
func (d *Device) Reserve(ctx context.Context, key uint64, typ blockdev.ReservationType) error {
	return d.s.Reserve(ctx, d.lun, key, typ)
}

// Release implements blockdev.Reservations.
func (d *Device) Release(ctx context.Context, key uint64, typ blockdev.ReservationType) error {
	return d.s.Release(ctx, d.lun, key, typ)
}

// Preempt implements blockdev.Reservations. tgtd lacks PREEMPT AND ABORT;
// asking for it returns blockdev.ErrNotSupported there.
func (d *Device) Preempt(ctx context.Context, key, victim uint64, typ blockdev.ReservationType, abort bool) error {
	return d.s.Preempt(ctx, d.lun, key, victim, typ, abort)
}

// Clear implements blockdev.Reservations.
func (d *Device) Clear(ctx context.Context, key uint64) error {
	return d.s.Clear(ctx, d.lun, key)
}

// ReadKeys implements blockdev.Reservations.
func (d *Device) ReadKeys(ctx context.Context) ([]uint64, uint32, error) {
	return d.s.ReadKeys(ctx, d.lun)
}

// ReadReservation implements blockdev.Reservations.
func (d *Device) ReadReservation(ctx context.Context) (blockdev.Reservation, error) {
	return d.s.ReadReservation(ctx, d.lun)
}

func blockdevUnknown(err error) bool { return errors.Is(err, blockdev.ErrWriteOutcomeUnknown) }
