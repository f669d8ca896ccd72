package scsi

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestParseSenseFixed(t *testing.T) {
	b := make([]byte, 18)
	b[0] = 0xf0 // valid, current, fixed
	b[2] = byte(KeyMediumError)
	binary.BigEndian.PutUint32(b[3:7], 1234)
	b[7] = 10
	b[12], b[13] = 0x11, 0x00
	s, err := ParseSense(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Key != KeyMediumError || s.ASC != 0x11 || !s.InfoValid || s.Info != 1234 {
		t.Fatalf("%+v", s)
	}
	if got := s.String(); got != "MEDIUM ERROR (ASC 0x11 ASCQ 0x00: unrecovered read error)" {
		t.Fatalf("%q", got)
	}
}

func TestParseSenseDescriptor(t *testing.T) {
	b := []byte{0x72, byte(KeyUnitAttention), 0x2a, 0x05, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x00}
	s, err := ParseSense(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Key != KeyUnitAttention || s.ASC != 0x2a || s.ASCQ != 0x05 || !s.Descriptor || !s.InfoValid || s.Info != 0x1000 {
		t.Fatalf("%+v", s)
	}
}

func TestParseSenseBad(t *testing.T) {
	for _, b := range [][]byte{nil, {0x70}, {0x72, 1}, {0x00, 0, 0, 0}} {
		if _, err := ParseSense(b); !errors.Is(err, ErrBadSense) {
			t.Fatalf("% x: %v", b, err)
		}
	}
}

func TestCDBs(t *testing.T) {
	if c := Read(10, 8, false); c[0] != OpRead10 || binary.BigEndian.Uint32(c[2:6]) != 10 || binary.BigEndian.Uint16(c[7:9]) != 8 {
		t.Fatalf("READ(10) % x", c)
	}
	if c := Read(1<<33, 8, false); c[0] != OpRead16 || binary.BigEndian.Uint64(c[2:10]) != 1<<33 {
		t.Fatalf("READ(16) % x", c)
	}
	if c := Write(1, 1<<17, true, false); c[0] != OpWrite16 || c[1]&0x08 == 0 || binary.BigEndian.Uint32(c[10:14]) != 1<<17 {
		t.Fatalf("WRITE(16) % x", c)
	}
	c, p := PROut(PROutPreempt, 5, 0xa, 0xb)
	if c[0] != OpPROut || c[1] != 4 || c[2] != 5 || binary.BigEndian.Uint32(c[5:9]) != 24 ||
		binary.BigEndian.Uint64(p[0:8]) != 0xa || binary.BigEndian.Uint64(p[8:16]) != 0xb {
		t.Fatalf("PR OUT % x / % x", c, p)
	}
}

func TestLUNEncoding(t *testing.T) {
	for _, l := range []uint64{0, 1, 255, 256, 16383} {
		if got := DecodeLUN(EncodeLUN(l)); got != l {
			t.Fatalf("LUN %d round-trips to %d", l, got)
		}
	}
}

func TestParseReadReservationAndKeys(t *testing.T) {
	b := make([]byte, 24)
	binary.BigEndian.PutUint32(b[0:4], 3)
	binary.BigEndian.PutUint32(b[4:8], 16)
	binary.BigEndian.PutUint64(b[8:16], 0xabc)
	b[21] = 0x05
	r, err := ParseReadReservation(b)
	if err != nil || !r.Held || r.Key != 0xabc || r.Type != 5 || r.Generation != 3 {
		t.Fatalf("%+v %v", r, err)
	}
	k := make([]byte, 24)
	binary.BigEndian.PutUint32(k[4:8], 16)
	binary.BigEndian.PutUint64(k[8:16], 1)
	binary.BigEndian.PutUint64(k[16:24], 2)
	_, keys, err := ParseReadKeys(k)
	if err != nil || len(keys) != 2 || keys[1] != 2 {
		t.Fatalf("%v %v", keys, err)
	}
}

func TestParseCapacity(t *testing.T) {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, 2047)
	binary.BigEndian.PutUint32(b[8:], 4096)
	c, err := ParseCapacity16(b)
	if err != nil || c.Bytes() != 8<<20 {
		t.Fatalf("%+v %v", c, err)
	}
	binary.BigEndian.PutUint32(b[8:], 0)
	if _, err := ParseCapacity16(b); err == nil {
		t.Fatal("zero block length accepted")
	}
}

// FuzzParseSense: sense data comes straight from the target.
func FuzzParseSense(f *testing.F) {
	f.Add([]byte{0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0})
	f.Add([]byte{0x72, 6, 0x2a, 5, 0, 0, 0, 12, 0, 10, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSense(b)
		if err == nil {
			_ = s.String()
		}
	})
}

// FuzzParseData runs every parameter-data decoder on arbitrary input.
func FuzzParseData(f *testing.F) {
	f.Add([]byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	f.Add(make([]byte, 36))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseCapacity16(b)
		_, _ = ParseInquiry(b)
		if v, err := ParseVPD(b); err == nil {
			_, _ = ParseDeviceID(v.Data)
			_ = ParseUnitSerial(v.Data)
		}
		_, _, _ = ParseReportLUNs(b)
		_, _, _ = ParseReadKeys(b)
		_, _ = ParseReadReservation(b)
		_, _ = ParseCapabilities(b)
	})
}
