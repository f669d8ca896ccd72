// Package scsi builds the command descriptor blocks the initiator sends and
// decodes what targets return: sense data, INQUIRY, READ CAPACITY(16),
// REPORT LUNS and PERSISTENT RESERVE IN. It is pure and has fuzz targets
// for every decoder.
package scsi

import "encoding/binary"

// Operation codes.
const (
	OpTestUnitReady   = 0x00
	OpInquiry         = 0x12
	OpRead10          = 0x28
	OpWrite10         = 0x2a
	OpSyncCache10     = 0x35
	OpPRIn            = 0x5e
	OpPROut           = 0x5f
	OpRead16          = 0x88
	OpWrite16         = 0x8a
	OpSyncCache16     = 0x91
	OpServiceActionIn = 0x9e
	OpReportLUNs      = 0xa0

	saReadCapacity16 = 0x10
)

// CDB is a command descriptor block of up to 16 bytes.
type CDB [16]byte

// TestUnitReady builds TEST UNIT READY.
func TestUnitReady() CDB { return CDB{OpTestUnitReady} }

// Inquiry builds INQUIRY; with evpd it asks for the vital product data page.
func Inquiry(evpd bool, page byte, alloc uint16) CDB {
	c := CDB{OpInquiry}
	if evpd {
		c[1] = 1
		c[2] = page
	}
	binary.BigEndian.PutUint16(c[3:5], alloc)
	return c
}

// ReadCapacity16 builds READ CAPACITY(16).
func ReadCapacity16(alloc uint32) CDB {
	c := CDB{OpServiceActionIn, saReadCapacity16}
	binary.BigEndian.PutUint32(c[10:14], alloc)
	return c
}

// ReportLUNs builds REPORT LUNS (select report 0: all LUNs).
func ReportLUNs(alloc uint32) CDB {
	c := CDB{OpReportLUNs}
	binary.BigEndian.PutUint32(c[6:10], alloc)
	return c
}

// Read builds READ(10) when lba and blocks fit, READ(16) otherwise.
func Read(lba uint64, blocks uint32, force16 bool) CDB {
	if !force16 && lba <= 0xffffffff && blocks <= 0xffff {
		c := CDB{OpRead10}
		binary.BigEndian.PutUint32(c[2:6], uint32(lba))
		binary.BigEndian.PutUint16(c[7:9], uint16(blocks))
		return c
	}
	c := CDB{OpRead16}
	binary.BigEndian.PutUint64(c[2:10], lba)
	binary.BigEndian.PutUint32(c[10:14], blocks)
	return c
}

// Write builds WRITE(10) when lba and blocks fit, WRITE(16) otherwise. fua
// sets Force Unit Access.
func Write(lba uint64, blocks uint32, fua, force16 bool) CDB {
	var c CDB
	if !force16 && lba <= 0xffffffff && blocks <= 0xffff {
		c = CDB{OpWrite10}
		binary.BigEndian.PutUint32(c[2:6], uint32(lba))
		binary.BigEndian.PutUint16(c[7:9], uint16(blocks))
	} else {
		c = CDB{OpWrite16}
		binary.BigEndian.PutUint64(c[2:10], lba)
		binary.BigEndian.PutUint32(c[10:14], blocks)
	}
	if fua {
		c[1] |= 0x08
	}
	return c
}

// SyncCache builds SYNCHRONIZE CACHE over the whole medium: (10) unless
// force16.
func SyncCache(force16 bool) CDB {
	if force16 {
		return CDB{OpSyncCache16}
	}
	return CDB{OpSyncCache10}
}

// PERSISTENT RESERVE IN service actions.
const (
	PRInReadKeys           = 0
	PRInReadReservation    = 1
	PRInReportCapabilities = 2
)

// PRIn builds PERSISTENT RESERVE IN.
func PRIn(sa byte, alloc uint16) CDB {
	c := CDB{OpPRIn, sa & 0x1f}
	binary.BigEndian.PutUint16(c[7:9], alloc)
	return c
}

// PERSISTENT RESERVE OUT service actions.
const (
	PROutRegister        = 0
	PROutReserve         = 1
	PROutRelease         = 2
	PROutClear           = 3
	PROutPreempt         = 4
	PROutPreemptAndAbort = 5
	PROutRegisterIgnore  = 6
	PROutRegisterAndMove = 7
	prOutParamLen        = 24
	scopeLU              = 0
)

// PROut builds PERSISTENT RESERVE OUT and its 24-byte parameter list.
func PROut(sa byte, typ byte, key, saKey uint64) (CDB, []byte) {
	c := CDB{OpPROut, sa & 0x1f, scopeLU<<4 | typ&0x0f}
	binary.BigEndian.PutUint32(c[5:9], prOutParamLen)
	p := make([]byte, prOutParamLen)
	binary.BigEndian.PutUint64(p[0:8], key)
	binary.BigEndian.PutUint64(p[8:16], saKey)
	return c, p
}

// CDBLen returns the length of the command's CDB from its group code.
func CDBLen(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 16
}
