package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// ErrShortData: a target returned less parameter data than the format
// needs.
var ErrShortData = errors.New("scsi: short parameter data")

// Capacity is the answer to READ CAPACITY(16).
type Capacity struct {
	LastLBA     uint64
	BlockLength uint32
	// PhysExp is log2 of logical blocks per physical block.
	PhysExp uint8
	// ThinProvisioned is LBPME.
	ThinProvisioned bool
}

// Blocks returns the number of logical blocks.
func (c Capacity) Blocks() uint64 { return c.LastLBA + 1 }

// Bytes returns the capacity in bytes.
func (c Capacity) Bytes() uint64 { return c.Blocks() * uint64(c.BlockLength) }

// ParseCapacity16 decodes READ CAPACITY(16) data.
func ParseCapacity16(b []byte) (Capacity, error) {
	if len(b) < 12 {
		return Capacity{}, fmt.Errorf("%w: READ CAPACITY(16) returned %d bytes", ErrShortData, len(b))
	}
	c := Capacity{LastLBA: binary.BigEndian.Uint64(b[0:8]), BlockLength: binary.BigEndian.Uint32(b[8:12])}
	if len(b) >= 15 {
		c.PhysExp = b[13] & 0x0f
		c.ThinProvisioned = b[14]&0x80 != 0
	}
	if c.BlockLength == 0 || c.BlockLength%512 != 0 || c.BlockLength > 1<<20 {
		return Capacity{}, fmt.Errorf("%w: block length %d", ErrShortData, c.BlockLength)
	}
	if c.LastLBA == ^uint64(0) {
		return Capacity{}, fmt.Errorf("%w: last LBA overflows", ErrShortData)
	}
	return c, nil
}

// Inquiry is the standard INQUIRY data the initiator uses.
type InquiryData struct {
	PeripheralQualifier byte
	DeviceType          byte
	Removable           bool
	Version             byte
	Vendor, Product     string
	Revision            string
}

// Device types.
const (
	TypeDisk       = 0x00
	TypeController = 0x0c
	TypeNoDevice   = 0x1f
)

// TypeName names a peripheral device type.
func TypeName(t byte) string {
	switch t {
	case TypeDisk:
		return "disk"
	case 0x05:
		return "cd/dvd"
	case 0x01:
		return "tape"
	case TypeController:
		return "controller"
	case 0x0d:
		return "enclosure"
	case TypeNoDevice:
		return "none"
	}
	return fmt.Sprintf("type 0x%02x", t)
}

// ParseInquiry decodes standard INQUIRY data.
func ParseInquiry(b []byte) (InquiryData, error) {
	if len(b) < 5 {
		return InquiryData{}, fmt.Errorf("%w: INQUIRY returned %d bytes", ErrShortData, len(b))
	}
	d := InquiryData{PeripheralQualifier: b[0] >> 5, DeviceType: b[0] & 0x1f, Removable: b[1]&0x80 != 0, Version: b[2]}
	str := func(from, to int) string {
		if len(b) < to {
			if len(b) <= from {
				return ""
			}
			to = len(b)
		}
		return strings.TrimRight(strings.Map(printable, string(b[from:to])), " ")
	}
	d.Vendor, d.Product, d.Revision = str(8, 16), str(16, 32), str(32, 36)
	return d, nil
}

func printable(r rune) rune {
	if r < 0x20 || r > 0x7e {
		return '?'
	}
	return r
}

// VPD is a vital product data page.
type VPD struct {
	Page byte
	Data []byte
}

// ParseVPD decodes a VPD page header and returns its payload.
func ParseVPD(b []byte) (VPD, error) {
	if len(b) < 4 {
		return VPD{}, fmt.Errorf("%w: VPD page of %d bytes", ErrShortData, len(b))
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return VPD{Page: b[1], Data: b[4 : 4+n]}, nil
}

// Designator is one identification descriptor of VPD page 0x83.
type Designator struct {
	CodeSet, Type, Association byte
	Value                      []byte
}

// String renders the designator as text or hex by its code set.
func (d Designator) String() string {
	if d.CodeSet == 2 || d.CodeSet == 3 {
		return strings.Map(printable, strings.TrimRight(string(d.Value), "\x00"))
	}
	return fmt.Sprintf("%x", d.Value)
}

// ParseDeviceID decodes the payload of VPD page 0x83.
func ParseDeviceID(p []byte) ([]Designator, error) {
	var ds []Designator
	for len(p) > 0 {
		if len(p) < 4 {
			return ds, fmt.Errorf("%w: truncated designation descriptor", ErrShortData)
		}
		l := int(p[3])
		if 4+l > len(p) {
			return ds, fmt.Errorf("%w: designation descriptor of %d bytes in %d", ErrShortData, l, len(p)-4)
		}
		ds = append(ds, Designator{CodeSet: p[0] & 0x0f, Association: p[1] >> 4 & 3, Type: p[1] & 0x0f,
			Value: append([]byte(nil), p[4:4+l]...)})
		p = p[4+l:]
	}
	return ds, nil
}

// ParseUnitSerial decodes the payload of VPD page 0x80.
func ParseUnitSerial(p []byte) string {
	return strings.TrimSpace(strings.Map(printable, strings.TrimRight(string(p), "\x00")))
}

// ParseReportLUNs decodes REPORT LUNS data into LUN numbers. total is the
// list length the target has, which may exceed what fit into b.
func ParseReportLUNs(b []byte) (luns []uint64, total int, err error) {
	if len(b) < 8 {
		return nil, 0, fmt.Errorf("%w: REPORT LUNS returned %d bytes", ErrShortData, len(b))
	}
	n := int(binary.BigEndian.Uint32(b[0:4]))
	total = n / 8
	p := b[8:]
	if n < len(p) {
		p = p[:n]
	}
	for len(p) >= 8 {
		luns = append(luns, DecodeLUN(binary.BigEndian.Uint64(p[:8])))
		p = p[8:]
	}
	return luns, total, nil
}

// EncodeLUN returns the 8-byte SAM LUN field for a LUN number: peripheral
// addressing below 256, flat space addressing up to 16383.
func EncodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}

// DecodeLUN returns the LUN number of an 8-byte SAM LUN field with
// peripheral or flat space addressing; other methods are returned raw.
func DecodeLUN(v uint64) uint64 {
	top := v >> 48
	switch top >> 14 {
	case 0:
		return top & 0xff
	case 1:
		return top & 0x3fff
	}
	return v
}

// ParseReadKeys decodes PERSISTENT RESERVE IN / READ KEYS data.
func ParseReadKeys(b []byte) (gen uint32, keys []uint64, err error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("%w: READ KEYS returned %d bytes", ErrShortData, len(b))
	}
	gen = binary.BigEndian.Uint32(b[0:4])
	n := int(binary.BigEndian.Uint32(b[4:8]))
	p := b[8:]
	if n < len(p) {
		p = p[:n]
	}
	for len(p) >= 8 {
		keys = append(keys, binary.BigEndian.Uint64(p[:8]))
		p = p[8:]
	}
	return gen, keys, nil
}

// ReservationData is decoded READ RESERVATION data.
type ReservationData struct {
	Generation uint32
	Held       bool
	Key        uint64
	Scope      byte
	Type       byte
}

// ParseReadReservation decodes PERSISTENT RESERVE IN / READ RESERVATION.
func ParseReadReservation(b []byte) (ReservationData, error) {
	if len(b) < 8 {
		return ReservationData{}, fmt.Errorf("%w: READ RESERVATION returned %d bytes", ErrShortData, len(b))
	}
	r := ReservationData{Generation: binary.BigEndian.Uint32(b[0:4])}
	n := binary.BigEndian.Uint32(b[4:8])
	if n == 0 {
		return r, nil
	}
	if n < 16 || len(b) < 24 {
		return ReservationData{}, fmt.Errorf("%w: READ RESERVATION descriptor of %d bytes", ErrShortData, len(b)-8)
	}
	r.Held = true
	r.Key = binary.BigEndian.Uint64(b[8:16])
	r.Scope = b[21] >> 4
	r.Type = b[21] & 0x0f
	return r, nil
}

// Capabilities is decoded REPORT CAPABILITIES data.
type Capabilities struct {
	// CRH: compatible reservation handling. SIPC, ATPC, PTPLC: the
	// target accepts SPEC_I_PT, ALL_TG_PT and APTPL. PTPLA: persist
	// through power loss is activated.
	CRH, SIPC, ATPC, PTPLC, PTPLA bool
	// TypesValid says TypeMask is meaningful (TMV).
	TypesValid bool
	// TypeMask has bit (1<<type) set for each supported reservation type.
	TypeMask uint16
}

// Supports reports whether reservation type t is in the mask.
func (c Capabilities) Supports(t byte) bool {
	if !c.TypesValid {
		return true
	}
	return c.TypeMask&(1<<t) != 0
}

// ParseCapabilities decodes PERSISTENT RESERVE IN / REPORT CAPABILITIES.
func ParseCapabilities(b []byte) (Capabilities, error) {
	if len(b) < 8 {
		return Capabilities{}, fmt.Errorf("%w: REPORT CAPABILITIES returned %d bytes", ErrShortData, len(b))
	}
	c := Capabilities{CRH: b[2]&0x10 != 0, SIPC: b[2]&0x08 != 0, ATPC: b[2]&0x04 != 0, PTPLC: b[2]&0x01 != 0,
		TypesValid: b[3]&0x80 != 0, PTPLA: b[3]&0x01 != 0}
	// Type mask bits: byte 4 holds WR_EX_AR(7) EX_AC_RO(6) WR_EX_RO(5)
	// EX_AC(3) WR_EX(1); byte 5 holds EX_AC_AR(8).
	m := b[4]
	for _, t := range []byte{1, 3, 5, 6, 7} {
		if m&(1<<t) != 0 {
			c.TypeMask |= 1 << t
		}
	}
	if b[5]&0x01 != 0 {
		c.TypeMask |= 1 << 8
	}
	return c, nil
}
