package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Status codes (SAM-5).
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusConditionMet        = 0x04
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
	StatusACAActive           = 0x30
	StatusTaskAborted         = 0x40
)

// StatusName names a status code.
func StatusName(s byte) string {
	switch s {
	case StatusGood:
		return "GOOD"
	case StatusCheckCondition:
		return "CHECK CONDITION"
	case StatusConditionMet:
		return "CONDITION MET"
	case StatusBusy:
		return "BUSY"
	case StatusReservationConflict:
		return "RESERVATION CONFLICT"
	case StatusTaskSetFull:
		return "TASK SET FULL"
	case StatusACAActive:
		return "ACA ACTIVE"
	case StatusTaskAborted:
		return "TASK ABORTED"
	}
	return fmt.Sprintf("status 0x%02x", s)
}

// SenseKey is the sense key (SPC-4 table 49).
type SenseKey uint8

// Sense keys.
const (
	KeyNoSense        SenseKey = 0x0
	KeyRecoveredError SenseKey = 0x1
	KeyNotReady       SenseKey = 0x2
	KeyMediumError    SenseKey = 0x3
	KeyHardwareError  SenseKey = 0x4
	KeyIllegalRequest SenseKey = 0x5
	KeyUnitAttention  SenseKey = 0x6
	KeyDataProtect    SenseKey = 0x7
	KeyBlankCheck     SenseKey = 0x8
	KeyAbortedCommand SenseKey = 0xb
	KeyMiscompare     SenseKey = 0xe
)

var keyNames = [...]string{"NO SENSE", "RECOVERED ERROR", "NOT READY", "MEDIUM ERROR",
	"HARDWARE ERROR", "ILLEGAL REQUEST", "UNIT ATTENTION", "DATA PROTECT", "BLANK CHECK",
	"VENDOR SPECIFIC", "COPY ABORTED", "ABORTED COMMAND", "RESERVED", "VOLUME OVERFLOW",
	"MISCOMPARE", "COMPLETED"}

func (k SenseKey) String() string { return keyNames[k&0xf] }

// Sense is decoded sense data.
type Sense struct {
	Key  SenseKey
	ASC  byte
	ASCQ byte
	// Info is the INFORMATION field when Valid (e.g. the failing LBA of a
	// medium error).
	Info       uint64
	InfoValid  bool
	Descriptor bool
}

// ErrBadSense: sense data too short or of an unknown response code.
var ErrBadSense = errors.New("scsi: malformed sense data")

// ParseSense decodes fixed (0x70/0x71) or descriptor (0x72/0x73) format
// sense data.
func ParseSense(b []byte) (Sense, error) {
	if len(b) < 1 {
		return Sense{}, fmt.Errorf("%w: empty", ErrBadSense)
	}
	switch b[0] & 0x7f {
	case 0x70, 0x71:
		if len(b) < 3 {
			return Sense{}, fmt.Errorf("%w: fixed format of %d bytes", ErrBadSense, len(b))
		}
		s := Sense{Key: SenseKey(b[2] & 0x0f)}
		if len(b) >= 7 && b[0]&0x80 != 0 {
			s.Info = uint64(binary.BigEndian.Uint32(b[3:7]))
			s.InfoValid = true
		}
		// ASC/ASCQ exist only if the additional length covers them.
		if len(b) >= 14 && (len(b) < 8 || int(b[7])+8 >= 14) {
			s.ASC, s.ASCQ = b[12], b[13]
		}
		return s, nil
	case 0x72, 0x73:
		if len(b) < 4 {
			return Sense{}, fmt.Errorf("%w: descriptor format of %d bytes", ErrBadSense, len(b))
		}
		s := Sense{Key: SenseKey(b[1] & 0x0f), ASC: b[2], ASCQ: b[3], Descriptor: true}
		if len(b) >= 8 {
			end := 8 + int(b[7])
			if end > len(b) {
				end = len(b)
			}
			d := b[8:end]
			for len(d) >= 2 {
				typ, l := d[0], int(d[1])
				if 2+l > len(d) {
					break
				}
				if typ == 0 && l >= 10 {
					s.Info = binary.BigEndian.Uint64(d[4:12])
					s.InfoValid = d[2]&0x80 != 0
				}
				d = d[2+l:]
			}
		}
		return s, nil
	}
	return Sense{}, fmt.Errorf("%w: response code 0x%02x", ErrBadSense, b[0]&0x7f)
}

// String renders sense as "UNIT ATTENTION (ASC 0x29 ASCQ 0x00: ...)".
func (s Sense) String() string {
	d := ascText(s.ASC, s.ASCQ)
	if d != "" {
		d = ": " + d
	}
	return fmt.Sprintf("%v (ASC 0x%02x ASCQ 0x%02x%s)", s.Key, s.ASC, s.ASCQ, d)
}

func ascText(asc, ascq byte) string {
	switch uint16(asc)<<8 | uint16(ascq) {
	case 0x0400:
		return "logical unit not ready"
	case 0x1100:
		return "unrecovered read error"
	case 0x0c00:
		return "write error"
	case 0x2000:
		return "invalid command operation code"
	case 0x2100:
		return "logical block address out of range"
	case 0x2400:
		return "invalid field in CDB"
	case 0x2500:
		return "logical unit not supported"
	case 0x2600:
		return "invalid field in parameter list"
	case 0x2700:
		return "write protected"
	case 0x2800:
		return "not ready to ready change, medium may have changed"
	case 0x2900:
		return "power on, reset, or bus device reset occurred"
	case 0x2a01:
		return "mode parameters changed"
	case 0x2a03:
		return "reservations preempted"
	case 0x2a04:
		return "reservations released"
	case 0x2a05:
		return "registrations preempted"
	case 0x2a09:
		return "capacity data has changed"
	case 0x3f0e:
		return "reported LUNs data has changed"
	case 0x4700:
		return "SCSI parity error"
	case 0x4b00:
		return "data phase error"
	}
	return ""
}
