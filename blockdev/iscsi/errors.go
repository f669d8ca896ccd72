package iscsi

import (
	"errors"
	"fmt"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/scsi"
)

// Errors of the initiator. Each says whether a retry is safe.
var (
	// ErrAuthFailed: the target refused the login credentials (CHAP
	// secret or user wrong, or the target demands CHAP and none was
	// given), or a mutual-CHAP target failed to prove itself. Retrying
	// with the same credentials fails again.
	ErrAuthFailed = errors.New("iscsi: authentication failed")
	// ErrTargetNotFound: the target name is not served at the portal.
	// Not retriable without another address.
	ErrTargetNotFound = errors.New("iscsi: target not found")
	// ErrLoginFailed: the login was refused for another reason (the
	// status class and detail are in the message). Retriable only where
	// the status class is 3 (target error).
	ErrLoginFailed = errors.New("iscsi: login failed")
	// ErrProtocol: the target sent something RFC 7143 forbids here. The
	// connection is dropped; a retry on a fresh connection is safe for
	// commands that are not writes.
	ErrProtocol = errors.New("iscsi: protocol error")
	// ErrNotConnected: there is no usable connection and reconnecting
	// failed within the configured attempts. The command was not sent,
	// so a later retry is safe. It also matches blockdev.ErrIO.
	ErrNotConnected = errors.New("iscsi: not connected to target")
	// ErrTaskAborted: the target aborted the command (TASK ABORTED status
	// or an abort this initiator asked for). For reads a retry is safe;
	// for writes the outcome is unknown.
	ErrTaskAborted = errors.New("iscsi: task aborted")
	// ErrBusy: the target answered BUSY or TASK SET FULL; the command was
	// not executed and may be retried later.
	ErrBusy = errors.New("iscsi: target busy")
	// ErrRejected: the target rejected the PDU (Reject PDU); the command
	// was not executed.
	ErrRejected = errors.New("iscsi: command rejected by target")

	// Sense categories, matched by errors.Is on a *SCSIError.

	// ErrCheckCondition matches every CHECK CONDITION.
	ErrCheckCondition = errors.New("iscsi: check condition")
	// ErrUnitAttention: the command was not executed because the logical
	// unit reports an event (reset, reservations preempted, capacity
	// changed). Retrying is safe; the device layer retries a bounded
	// number of times by itself.
	ErrUnitAttention = errors.New("iscsi: unit attention")
	// ErrMediumError: the target could not read or write the medium.
	// The range's contents are unknown for writes; reads may be retried
	// on another leg.
	ErrMediumError = errors.New("iscsi: medium error")
	// ErrIllegalRequest: the target refused the command as invalid (bad
	// opcode, field or LBA range). Never retriable.
	ErrIllegalRequest = errors.New("iscsi: illegal request")
	// ErrNotReady: the logical unit is not ready. Retriable later.
	ErrNotReady = errors.New("iscsi: logical unit not ready")
	// ErrDataProtect: the logical unit is write protected.
	ErrDataProtect = errors.New("iscsi: data protect")
	// ErrHardwareError: the target reports a hardware failure.
	ErrHardwareError = errors.New("iscsi: hardware error")
)

// SCSIError is a command that ended with a status other than GOOD. It
// matches blockdev.ErrReservationConflict for RESERVATION CONFLICT, and
// the sense categories above for CHECK CONDITION; a medium or hardware
// error also matches blockdev.ErrIO.
type SCSIError struct {
	// Op is the operation code of the failed command.
	Op byte
	// Status is the SCSI status byte.
	Status byte
	// Sense is set when Status is CHECK CONDITION and the target sent
	// sense data that could be decoded.
	Sense    scsi.Sense
	HasSense bool
}

func (e *SCSIError) Error() string {
	if e.HasSense {
		return fmt.Sprintf("iscsi: command 0x%02x: %s: %v", e.Op, scsi.StatusName(e.Status), e.Sense)
	}
	return fmt.Sprintf("iscsi: command 0x%02x: %s", e.Op, scsi.StatusName(e.Status))
}

// Is lets errors.Is match the sentinels that describe this error.
func (e *SCSIError) Is(target error) bool {
	switch e.Status {
	case scsi.StatusReservationConflict:
		return target == blockdev.ErrReservationConflict
	case scsi.StatusBusy, scsi.StatusTaskSetFull:
		return target == ErrBusy
	case scsi.StatusTaskAborted:
		return target == ErrTaskAborted
	case scsi.StatusCheckCondition:
		if target == ErrCheckCondition {
			return true
		}
		if !e.HasSense {
			return false
		}
		switch e.Sense.Key {
		case scsi.KeyUnitAttention:
			return target == ErrUnitAttention
		case scsi.KeyMediumError:
			return target == ErrMediumError || target == blockdev.ErrIO
		case scsi.KeyHardwareError:
			return target == ErrHardwareError || target == blockdev.ErrIO
		case scsi.KeyIllegalRequest:
			return target == ErrIllegalRequest
		case scsi.KeyNotReady:
			return target == ErrNotReady
		case scsi.KeyDataProtect:
			return target == ErrDataProtect
		case scsi.KeyAbortedCommand:
			return target == ErrTaskAborted
		}
	}
	return false
}

// ASC returns the additional sense code and qualifier, or false when the
// error carries no sense data.
func (e *SCSIError) ASC() (asc, ascq byte, ok bool) {
	return e.Sense.ASC, e.Sense.ASCQ, e.HasSense
}

// LoginError is a login the target refused, with its status.
type LoginError struct {
	Class, Detail byte
	err           error
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("%v (login status class 0x%02x detail 0x%02x: %s)", e.err, e.Class, e.Detail, loginStatusText(e.Class, e.Detail))
}

func (e *LoginError) Unwrap() error { return e.err }

func newLoginError(class, detail byte) *LoginError {
	var err error
	switch {
	case class == 2 && (detail == 1 || detail == 2):
		err = ErrAuthFailed
	case class == 2 && (detail == 3 || detail == 4):
		err = ErrTargetNotFound
	default:
		err = ErrLoginFailed
	}
	return &LoginError{Class: class, Detail: detail, err: err}
}

func loginStatusText(class, detail byte) string {
	switch uint16(class)<<8 | uint16(detail) {
	case 0x0101:
		return "target moved temporarily"
	case 0x0102:
		return "target moved permanently"
	case 0x0200:
		return "initiator error"
	case 0x0201:
		return "authentication failure"
	case 0x0202:
		return "authorization failure"
	case 0x0203:
		return "target not found"
	case 0x0204:
		return "target removed"
	case 0x0205:
		return "unsupported version"
	case 0x0206:
		return "too many connections"
	case 0x0207:
		return "missing parameter"
	case 0x0208:
		return "cannot include connection in session"
	case 0x0209:
		return "session type not supported"
	case 0x020a:
		return "session does not exist"
	case 0x020b:
		return "invalid request during login"
	case 0x0300:
		return "target error"
	case 0x0301:
		return "service unavailable"
	case 0x0302:
		return "out of resources"
	}
	return "unknown status"
}

// outcomeUnknown wraps cause for a mutating command whose completion was
// lost.
func outcomeUnknown(op byte, cause error) error {
	return fmt.Errorf("%w: command 0x%02x: %w", blockdev.ErrWriteOutcomeUnknown, op, cause)
}

func notConnected(cause error) error {
	return fmt.Errorf("%w: %w: %w", ErrNotConnected, blockdev.ErrIO, cause)
}
