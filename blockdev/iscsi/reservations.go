package iscsi

import (
	"context"
	"errors"
	"fmt"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/scsi"
)

// ReservationCapabilities is the REPORT CAPABILITIES answer.
type ReservationCapabilities = scsi.Capabilities

// prOut runs a PERSISTENT RESERVE OUT. Re-sending after a lost
// connection is safe only for the idempotent service actions.
func (s *Session) prOut(ctx context.Context, lun uint64, sa byte, typ blockdev.ReservationType, key, saKey uint64) error {
	if s.cfg.ReadOnly {
		return fmt.Errorf("%w: PERSISTENT RESERVE OUT (service action 0x%02x) on LUN %d", blockdev.ErrReadOnly, sa, lun)
	}
	kind := mutating
	if sa == scsi.PROutRegisterIgnore || sa == scsi.PROutReserve || sa == scsi.PROutRelease {
		kind = idempotent
	}
	cdb, param := scsi.PROut(sa, byte(typ), key, saKey)
	_, err := s.run(ctx, &cmd{cdb: cdb, lun: lun, write: param}, kind)
	if err != nil && sa == scsi.PROutPreemptAndAbort && errors.Is(err, ErrIllegalRequest) {
		return fmt.Errorf("%w: PREEMPT AND ABORT: %w", blockdev.ErrNotSupported, err)
	}
	return err
}

// Register registers key for this I_T nexus (REGISTER AND IGNORE
// EXISTING KEY) and remembers it so it is registered again after a
// re-login. It also clears the session's fenced mark: registering is how
// a fenced node rejoins.
func (s *Session) Register(ctx context.Context, lun, key uint64) error {
	if err := s.prOut(ctx, lun, scsi.PROutRegisterIgnore, 0, 0, key); err != nil {
		return err
	}
	s.mu.Lock()
	s.prKey, s.prRegistered, s.fenced = key, key != 0, false
	if key == 0 {
		s.prReserved = false
	}
	s.mu.Unlock()
	return nil
}

// RegisterKey uses plain REGISTER: it fails with a reservation conflict
// when old is not this nexus's current key.
func (s *Session) RegisterKey(ctx context.Context, lun, old, key uint64) error {
	if err := s.prOut(ctx, lun, scsi.PROutRegister, 0, old, key); err != nil {
		return err
	}
	s.mu.Lock()
	s.prKey, s.prRegistered, s.fenced = key, key != 0, false
	s.mu.Unlock()
	return nil
}

// Unregister removes this nexus's registration.
func (s *Session) Unregister(ctx context.Context, lun, key uint64) error {
	if err := s.prOut(ctx, lun, scsi.PROutRegister, 0, key, 0); err != nil {
		return err
	}
	s.mu.Lock()
	s.prRegistered, s.prReserved = false, false
	s.mu.Unlock()
	return nil
}

// Reserve takes a reservation of type typ with key.
func (s *Session) Reserve(ctx context.Context, lun, key uint64, typ blockdev.ReservationType) error {
	if err := s.prOut(ctx, lun, scsi.PROutReserve, typ, key, 0); err != nil {
		return err
	}
	s.mu.Lock()
	s.prReserved, s.prType = true, typ
	s.mu.Unlock()
	return nil
}

// Release gives up the reservation.
func (s *Session) Release(ctx context.Context, lun, key uint64, typ blockdev.ReservationType) error {
	if err := s.prOut(ctx, lun, scsi.PROutRelease, typ, key, 0); err != nil {
		return err
	}
	s.mu.Lock()
	s.prReserved = false
	s.mu.Unlock()
	return nil
}

// Preempt removes victim's registration (and its reservation, which then
// passes to key). With abort it sends PREEMPT AND ABORT, which targets
// without it refuse with blockdev.ErrNotSupported.
func (s *Session) Preempt(ctx context.Context, lun, key, victim uint64, typ blockdev.ReservationType, abort bool) error {
	sa := byte(scsi.PROutPreempt)
	if abort {
		sa = scsi.PROutPreemptAndAbort
	}
	return s.prOut(ctx, lun, sa, typ, key, victim)
}

// Clear removes every registration and the reservation.
func (s *Session) Clear(ctx context.Context, lun, key uint64) error {
	if err := s.prOut(ctx, lun, scsi.PROutClear, 0, key, 0); err != nil {
		return err
	}
	s.mu.Lock()
	s.prRegistered, s.prReserved = false, false
	s.mu.Unlock()
	return nil
}

func (s *Session) prIn(ctx context.Context, lun uint64, sa byte) ([]byte, error) {
	alloc := 1024
	for {
		buf := make([]byte, alloc)
		r, err := s.run(ctx, &cmd{cdb: scsi.PRIn(sa, uint16(alloc)), lun: lun, read: buf}, idempotent)
		if err != nil {
			return nil, err
		}
		buf = buf[:r.N]
		if sa == scsi.PRInReadKeys && len(buf) >= 8 {
			need := 8 + int(uint32(buf[4])<<24|uint32(buf[5])<<16|uint32(buf[6])<<8|uint32(buf[7]))
			if need > alloc && alloc < 0xffff {
				alloc = min(need, 0xffff)
				continue
			}
		}
		return buf, nil
	}
}

// ReadKeys lists the registered keys and the PR generation.
func (s *Session) ReadKeys(ctx context.Context, lun uint64) ([]uint64, uint32, error) {
	b, err := s.prIn(ctx, lun, scsi.PRInReadKeys)
	if err != nil {
		return nil, 0, err
	}
	gen, keys, err := scsi.ParseReadKeys(b)
	return keys, gen, err
}

// ReadReservation reports the reservation held on lun.
func (s *Session) ReadReservation(ctx context.Context, lun uint64) (blockdev.Reservation, error) {
	b, err := s.prIn(ctx, lun, scsi.PRInReadReservation)
	if err != nil {
		return blockdev.Reservation{}, err
	}
	r, err := scsi.ParseReadReservation(b)
	if err != nil {
		return blockdev.Reservation{}, err
	}
	return blockdev.Reservation{Held: r.Held, Key: r.Key, Type: blockdev.ReservationType(r.Type)}, nil
}

// ReportCapabilities returns what reservation features lun supports.
func (s *Session) ReportCapabilities(ctx context.Context, lun uint64) (ReservationCapabilities, error) {
	b, err := s.prIn(ctx, lun, scsi.PRInReportCapabilities)
	if err != nil {
		return ReservationCapabilities{}, err
	}
	return scsi.ParseCapabilities(b)
}
