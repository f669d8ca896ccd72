// Package pdu encodes and decodes iSCSI protocol data units (RFC 7143
// section 11). It is pure: no sockets, no goroutines, no clock. The session
// layer reads bytes from a connection, hands them here, and acts on the
// decoded values.
package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// BHSLen is the length of the basic header segment.
const BHSLen = 48

// MaxDataSegment is the largest data segment length the 24-bit field can
// hold.
const MaxDataSegment = 1<<24 - 1

// Opcode is the iSCSI PDU opcode (the low six bits of byte 0).
type Opcode uint8

// Initiator opcodes.
const (
	OpNOPOut   Opcode = 0x00
	OpSCSICmd  Opcode = 0x01
	OpTaskMgmt Opcode = 0x02
	OpLogin    Opcode = 0x03
	OpText     Opcode = 0x04
	OpDataOut  Opcode = 0x05
	OpLogout   Opcode = 0x06
	OpSNACK    Opcode = 0x10
)

// Target opcodes.
const (
	OpNOPIn       Opcode = 0x20
	OpSCSIResp    Opcode = 0x21
	OpTaskMgmtRsp Opcode = 0x22
	OpLoginRsp    Opcode = 0x23
	OpTextRsp     Opcode = 0x24
	OpDataIn      Opcode = 0x25
	OpLogoutRsp   Opcode = 0x26
	OpR2T         Opcode = 0x31
	OpAsync       Opcode = 0x32
	OpReject      Opcode = 0x3f
)

var opNames = map[Opcode]string{
	OpNOPOut: "NOP-Out", OpSCSICmd: "SCSI Command", OpTaskMgmt: "Task Management Request",
	OpLogin: "Login Request", OpText: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogout: "Logout Request", OpSNACK: "SNACK Request", OpNOPIn: "NOP-In",
	OpSCSIResp: "SCSI Response", OpTaskMgmtRsp: "Task Management Response",
	OpLoginRsp: "Login Response", OpTextRsp: "Text Response", OpDataIn: "SCSI Data-In",
	OpLogoutRsp: "Logout Response", OpR2T: "Ready To Transfer", OpAsync: "Asynchronous Message",
	OpReject: "Reject",
}

func (o Opcode) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// ReservedTag is the all-ones task tag that means "no task".
const ReservedTag = 0xffffffff

// Errors returned by the decoders. A connection that yields one of them is
// out of step with its peer and must be dropped; none is retriable on the
// same connection.
var (
	// ErrShort: fewer bytes than the header or its declared lengths need.
	ErrShort = errors.New("iscsi pdu: truncated")
	// ErrBadOpcode: an opcode a target never sends.
	ErrBadOpcode = errors.New("iscsi pdu: unexpected opcode")
	// ErrTooLong: a data segment longer than the negotiated limit.
	ErrTooLong = errors.New("iscsi pdu: data segment exceeds negotiated limit")
	// ErrDigest: a header or data digest did not match.
	ErrDigest = errors.New("iscsi pdu: digest mismatch")
	// ErrMalformed: a field holds a value the protocol forbids.
	ErrMalformed = errors.New("iscsi pdu: malformed")
)

// BHS is a raw basic header segment with accessors for the common fields.
type BHS [BHSLen]byte

// Opcode returns the opcode.
func (b *BHS) Opcode() Opcode { return Opcode(b[0] & 0x3f) }

// Immediate reports the I bit.
func (b *BHS) Immediate() bool { return b[0]&0x40 != 0 }

// Flags returns byte 1.
func (b *BHS) Flags() byte { return b[1] }

// TotalAHSLen returns the additional header segments' length in bytes.
func (b *BHS) TotalAHSLen() int { return int(b[4]) * 4 }

// DataLen returns the data segment length in bytes (without padding).
func (b *BHS) DataLen() int { return int(b[5])<<16 | int(b[6])<<8 | int(b[7]) }

// SetDataLen sets the data segment length.
func (b *BHS) SetDataLen(n int) {
	b[5], b[6], b[7] = byte(n>>16), byte(n>>8), byte(n)
}

// ITT returns the initiator task tag.
func (b *BHS) ITT() uint32 { return binary.BigEndian.Uint32(b[16:20]) }

// U32 reads the big-endian word at off.
func (b *BHS) U32(off int) uint32 { return binary.BigEndian.Uint32(b[off : off+4]) }

// PutU32 writes a big-endian word at off.
func (b *BHS) PutU32(off int, v uint32) { binary.BigEndian.PutUint32(b[off:off+4], v) }

// Pad returns the number of padding bytes after a data segment of n bytes.
func Pad(n int) int { return (4 - n%4) % 4 }
