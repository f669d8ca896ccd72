package pdu

import "encoding/binary"

// Task attributes for SCSI commands.
const (
	AttrUntagged = 0
	AttrSimple   = 1
	AttrOrdered  = 2
)

// SCSICommand is the header of a SCSI Command PDU.
type SCSICommand struct {
	Immediate   bool
	Final       bool
	Read, Write bool
	Attr        byte
	LUN         uint64
	ITT         uint32
	ExpectedLen uint32
	CmdSN       uint32
	ExpStatSN   uint32
	CDB         [16]byte
}

// Encode writes the header into h (data length is set by the caller).
func (c *SCSICommand) Encode(h *BHS) {
	*h = BHS{}
	h[0] = byte(OpSCSICmd)
	if c.Immediate {
		h[0] |= 0x40
	}
	f := c.Attr & 7
	if c.Final {
		f |= 0x80
	}
	if c.Read {
		f |= 0x40
	}
	if c.Write {
		f |= 0x20
	}
	h[1] = f
	binary.BigEndian.PutUint64(h[8:16], c.LUN)
	h.PutU32(16, c.ITT)
	h.PutU32(20, c.ExpectedLen)
	h.PutU32(24, c.CmdSN)
	h.PutU32(28, c.ExpStatSN)
	copy(h[32:48], c.CDB[:])
}

// DataOut is the header of a SCSI Data-Out PDU.
type DataOut struct {
	Final        bool
	LUN          uint64
	ITT, TTT     uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
}

// Encode writes the header into h.
func (d *DataOut) Encode(h *BHS) {
	*h = BHS{}
	h[0] = byte(OpDataOut)
	if d.Final {
		h[1] = 0x80
	}
	binary.BigEndian.PutUint64(h[8:16], d.LUN)
	h.PutU32(16, d.ITT)
	h.PutU32(20, d.TTT)
	h.PutU32(28, d.ExpStatSN)
	h.PutU32(36, d.DataSN)
	h.PutU32(40, d.BufferOffset)
}

// NOPOut is the header of a NOP-Out PDU: a ping, or the answer to a
// target's ping (then ITT is ReservedTag and TTT is the target's).
type NOPOut struct {
	Immediate bool
	LUN       uint64
	ITT, TTT  uint32
	CmdSN     uint32
	ExpStatSN uint32
}

// Encode writes the header into h.
func (n *NOPOut) Encode(h *BHS) {
	*h = BHS{}
	h[0] = byte(OpNOPOut)
	if n.Immediate {
		h[0] |= 0x40
	}
	h[1] = 0x80
	binary.BigEndian.PutUint64(h[8:16], n.LUN)
	h.PutU32(16, n.ITT)
	h.PutU32(20, n.TTT)
	h.PutU32(24, n.CmdSN)
	h.PutU32(28, n.ExpStatSN)
}

// LoginRequest is the header of a Login Request PDU.
type LoginRequest struct {
	Transit, Continue bool
	CSG, NSG          Stage
	ISID              [6]byte
	TSIH              uint16
	ITT               uint32
	CID               uint16
	CmdSN             uint32
	ExpStatSN         uint32
}

// Encode writes the header into h. Login requests are always immediate
// and offer only version 0.
func (l *LoginRequest) Encode(h *BHS) {
	*h = BHS{}
	h[0] = 0x40 | byte(OpLogin)
	f := byte(l.CSG&3)<<2 | byte(l.NSG&3)
	if l.Transit {
		f |= 0x80
	}
	if l.Continue {
		f |= 0x40
	}
	h[1] = f
	copy(h[8:14], l.ISID[:])
	binary.BigEndian.PutUint16(h[14:16], l.TSIH)
	h.PutU32(16, l.ITT)
	binary.BigEndian.PutUint16(h[20:22], l.CID)
	h.PutU32(24, l.CmdSN)
	h.PutU32(28, l.ExpStatSN)
}

// TextRequest is the header of a Text Request PDU.
type TextRequest struct {
	Immediate       bool
	Final, Continue bool
	ITT, TTT        uint32
	CmdSN           uint32
	ExpStatSN       uint32
}

// Encode writes the header into h.
func (t *TextRequest) Encode(h *BHS) {
	*h = BHS{}
	h[0] = byte(OpText)
	if t.Immediate {
		h[0] |= 0x40
	}
	if t.Final {
		h[1] |= 0x80
	}
	if t.Continue {
		h[1] |= 0x40
	}
	h.PutU32(16, t.ITT)
	h.PutU32(20, t.TTT)
	h.PutU32(24, t.CmdSN)
	h.PutU32(28, t.ExpStatSN)
}

// Logout reasons.
const (
	LogoutSession    = 0
	LogoutConnection = 1
)

// LogoutRequest is the header of a Logout Request PDU.
type LogoutRequest struct {
	Reason    byte
	ITT       uint32
	CID       uint16
	CmdSN     uint32
	ExpStatSN uint32
}

// Encode writes the header into h. Logout is sent as immediate.
func (l *LogoutRequest) Encode(h *BHS) {
	*h = BHS{}
	h[0] = 0x40 | byte(OpLogout)
	h[1] = 0x80 | l.Reason&0x7f
	h.PutU32(16, l.ITT)
	binary.BigEndian.PutUint16(h[20:22], l.CID)
	h.PutU32(24, l.CmdSN)
	h.PutU32(28, l.ExpStatSN)
}

// Task management functions.
const (
	TMFAbortTask        = 1
	TMFAbortTaskSet     = 2
	TMFClearTaskSet     = 4
	TMFLogicalUnitReset = 5
	TMFTargetWarmReset  = 6
)

// Task management response codes.
const (
	TMFComplete      = 0
	TMFNoTask        = 1
	TMFNoLUN         = 2
	TMFTaskAllegiant = 3
	TMFNotSupported  = 5
	TMFAuthFailed    = 6
	TMFRejected      = 255
)

// TaskMgmtRequest is the header of a Task Management Function Request.
type TaskMgmtRequest struct {
	Function  byte
	LUN       uint64
	ITT       uint32
	RefTag    uint32
	CmdSN     uint32
	ExpStatSN uint32
	RefCmdSN  uint32
	ExpDataSN uint32
}

// Encode writes the header into h. Task management is sent as immediate.
func (t *TaskMgmtRequest) Encode(h *BHS) {
	*h = BHS{}
	h[0] = 0x40 | byte(OpTaskMgmt)
	h[1] = 0x80 | t.Function&0x7f
	binary.BigEndian.PutUint64(h[8:16], t.LUN)
	h.PutU32(16, t.ITT)
	h.PutU32(20, t.RefTag)
	h.PutU32(24, t.CmdSN)
	h.PutU32(28, t.ExpStatSN)
	h.PutU32(32, t.RefCmdSN)
	h.PutU32(36, t.ExpDataSN)
}
