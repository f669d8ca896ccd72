package pdu

import (
	"encoding/binary"
	"fmt"
)

// SeqNums are the sequence numbers a target PDU carries back.
type SeqNums struct {
	// StatSN is valid when HasStatSN is set; it is the status sequence
	// number of this PDU (the initiator acknowledges StatSN+1).
	StatSN    uint32
	HasStatSN bool
	// ExpCmdSN and MaxCmdSN open and close the command window.
	ExpCmdSN, MaxCmdSN uint32
}

// TargetPDU is any decoded target-to-initiator PDU header.
type TargetPDU interface {
	// Seq returns the sequence numbers the PDU carries.
	Seq() SeqNums
	// Tag returns the initiator task tag the PDU answers (ReservedTag if
	// none).
	Tag() uint32
}

// NOPIn is a target's ping or its answer to a NOP-Out.
type NOPIn struct {
	LUN                uint64
	ITT, TTT           uint32
	StatSN             uint32
	ExpCmdSN, MaxCmdSN uint32
}

func (p *NOPIn) Seq() SeqNums {
	// A NOP-In that is not an answer (ITT reserved) does not advance StatSN.
	return SeqNums{StatSN: p.StatSN, HasStatSN: p.ITT != ReservedTag, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *NOPIn) Tag() uint32 { return p.ITT }

// SCSIResponse ends a SCSI command.
type SCSIResponse struct {
	ITT                uint32
	Response, Status   byte
	Overflow           bool
	Underflow          bool
	StatSN             uint32
	ExpCmdSN, MaxCmdSN uint32
	ExpDataSN          uint32
	Residual           uint32
}

func (p *SCSIResponse) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: true, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *SCSIResponse) Tag() uint32 { return p.ITT }

// DataIn carries read data; with StatusPresent it also ends the command.
type DataIn struct {
	Final, Ack, StatusPresent bool
	Overflow, Underflow       bool
	Status                    byte
	LUN                       uint64
	ITT, TTT                  uint32
	StatSN                    uint32
	ExpCmdSN, MaxCmdSN        uint32
	DataSN, BufferOffset      uint32
	Residual                  uint32
}

func (p *DataIn) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: p.StatusPresent, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *DataIn) Tag() uint32 { return p.ITT }

// R2T asks for a range of a write's data.
type R2T struct {
	LUN                 uint64
	ITT, TTT            uint32
	StatSN              uint32
	ExpCmdSN, MaxCmdSN  uint32
	R2TSN, BufferOffset uint32
	DesiredLength       uint32
}

func (p *R2T) Seq() SeqNums { return SeqNums{ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN} }
func (p *R2T) Tag() uint32  { return p.ITT }

// Stage is a login stage (CSG/NSG).
type Stage uint8

// Login stages.
const (
	StageSecurity    Stage = 0
	StageOperational Stage = 1
	StageFullFeature Stage = 3
)

// LoginResponse answers a login request.
type LoginResponse struct {
	Transit, Continue         bool
	CSG, NSG                  Stage
	VersionMax, VersionActive byte
	ISID                      [6]byte
	TSIH                      uint16
	ITT                       uint32
	StatSN                    uint32
	ExpCmdSN, MaxCmdSN        uint32
	StatusClass, StatusDetail byte
}

func (p *LoginResponse) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: true, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *LoginResponse) Tag() uint32 { return p.ITT }

// TextResponse answers a text request.
type TextResponse struct {
	Final, Continue    bool
	LUN                uint64
	ITT, TTT           uint32
	StatSN             uint32
	ExpCmdSN, MaxCmdSN uint32
}

func (p *TextResponse) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: true, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *TextResponse) Tag() uint32 { return p.ITT }

// LogoutResponse answers a logout request.
type LogoutResponse struct {
	Response               byte
	ITT                    uint32
	StatSN                 uint32
	ExpCmdSN, MaxCmdSN     uint32
	Time2Wait, Time2Retain uint16
}

func (p *LogoutResponse) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: true, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *LogoutResponse) Tag() uint32 { return p.ITT }

// TaskMgmtResponse answers a task management request.
type TaskMgmtResponse struct {
	Response           byte
	ITT                uint32
	StatSN             uint32
	ExpCmdSN, MaxCmdSN uint32
}

func (p *TaskMgmtResponse) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: true, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *TaskMgmtResponse) Tag() uint32 { return p.ITT }

// Asynchronous event codes.
const (
	AsyncSCSIEvent        = 0
	AsyncRequestLogout    = 1
	AsyncDropConnection   = 2
	AsyncDropAllConns     = 3
	AsyncRequestNegotiate = 4
	AsyncVendor           = 255
)

// AsyncMessage is an unsolicited event from the target.
type AsyncMessage struct {
	LUN                    uint64
	StatSN                 uint32
	ExpCmdSN, MaxCmdSN     uint32
	Event, VCode           byte
	Param1, Param2, Param3 uint16
}

func (p *AsyncMessage) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: true, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *AsyncMessage) Tag() uint32 { return ReservedTag }

// Reject tells that the target could not process a PDU; its data segment
// holds the rejected PDU's header.
type Reject struct {
	Reason             byte
	StatSN             uint32
	ExpCmdSN, MaxCmdSN uint32
	DataSN             uint32
}

func (p *Reject) Seq() SeqNums {
	return SeqNums{StatSN: p.StatSN, HasStatSN: true, ExpCmdSN: p.ExpCmdSN, MaxCmdSN: p.MaxCmdSN}
}
func (p *Reject) Tag() uint32 { return ReservedTag }

// RejectedITT returns the task tag of the PDU a Reject's data segment
// holds, or false when the segment is too short to tell.
func RejectedITT(data []byte) (uint32, bool) {
	if len(data) < BHSLen {
		return 0, false
	}
	return binary.BigEndian.Uint32(data[16:20]), true
}

// ParseTarget decodes a header received from a target. It checks the
// opcode and the fields the initiator acts on; the data segment, if any,
// is read separately.
func ParseTarget(h *BHS) (TargetPDU, error) {
	u := h.U32
	lun := binary.BigEndian.Uint64(h[8:16])
	switch h.Opcode() {
	case OpNOPIn:
		return &NOPIn{LUN: lun, ITT: u(16), TTT: u(20), StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32)}, nil
	case OpSCSIResp:
		f := h[1]
		p := &SCSIResponse{ITT: u(16), Response: h[2], Status: h[3],
			Overflow: f&0x04 != 0, Underflow: f&0x02 != 0,
			StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32), ExpDataSN: u(36), Residual: u(44)}
		if p.Overflow && p.Underflow {
			return nil, fmt.Errorf("%w: SCSI Response with both overflow and underflow", ErrMalformed)
		}
		return p, nil
	case OpDataIn:
		f := h[1]
		p := &DataIn{Final: f&0x80 != 0, Ack: f&0x40 != 0, Overflow: f&0x04 != 0,
			Underflow: f&0x02 != 0, StatusPresent: f&0x01 != 0, Status: h[3], LUN: lun,
			ITT: u(16), TTT: u(20), StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32),
			DataSN: u(36), BufferOffset: u(40), Residual: u(44)}
		if p.StatusPresent && !p.Final {
			return nil, fmt.Errorf("%w: Data-In with status but without the final bit", ErrMalformed)
		}
		return p, nil
	case OpR2T:
		return &R2T{LUN: lun, ITT: u(16), TTT: u(20), StatSN: u(24), ExpCmdSN: u(28),
			MaxCmdSN: u(32), R2TSN: u(36), BufferOffset: u(40), DesiredLength: u(44)}, nil
	case OpLoginRsp:
		f := h[1]
		p := &LoginResponse{Transit: f&0x80 != 0, Continue: f&0x40 != 0,
			CSG: Stage(f >> 2 & 3), NSG: Stage(f & 3), VersionMax: h[2], VersionActive: h[3],
			TSIH: binary.BigEndian.Uint16(h[14:16]), ITT: u(16), StatSN: u(24),
			ExpCmdSN: u(28), MaxCmdSN: u(32), StatusClass: h[36], StatusDetail: h[37]}
		copy(p.ISID[:], h[8:14])
		if p.Transit && p.Continue {
			return nil, fmt.Errorf("%w: Login Response with both transit and continue", ErrMalformed)
		}
		return p, nil
	case OpTextRsp:
		f := h[1]
		p := &TextResponse{Final: f&0x80 != 0, Continue: f&0x40 != 0, LUN: lun, ITT: u(16), TTT: u(20),
			StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32)}
		if p.Final && p.Continue {
			return nil, fmt.Errorf("%w: Text Response with both final and continue", ErrMalformed)
		}
		return p, nil
	case OpLogoutRsp:
		return &LogoutResponse{Response: h[2], ITT: u(16), StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32),
			Time2Wait: binary.BigEndian.Uint16(h[40:42]), Time2Retain: binary.BigEndian.Uint16(h[42:44])}, nil
	case OpTaskMgmtRsp:
		return &TaskMgmtResponse{Response: h[2], ITT: u(16), StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32)}, nil
	case OpAsync:
		return &AsyncMessage{LUN: lun, StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32), Event: h[36], VCode: h[37],
			Param1: binary.BigEndian.Uint16(h[38:40]), Param2: binary.BigEndian.Uint16(h[40:42]),
			Param3: binary.BigEndian.Uint16(h[42:44])}, nil
	case OpReject:
		return &Reject{Reason: h[2], StatSN: u(24), ExpCmdSN: u(28), MaxCmdSN: u(32), DataSN: u(36)}, nil
	}
	return nil, fmt.Errorf("%w: %v from target", ErrBadOpcode, h.Opcode())
}
