package pdu

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

// targetFrame builds a target PDU on the wire for tests.
func targetFrame(h BHS, data []byte, dg Digests) []byte {
	var hb [BHSLen + 4]byte
	var tb [8]byte
	var out bytes.Buffer
	for _, p := range Frame(&h, data, dg, &hb, &tb) {
		out.Write(p)
	}
	return out.Bytes()
}

func TestFrameRoundTrip(t *testing.T) {
	for _, dg := range []Digests{{}, {Header: true}, {Data: true}, {Header: true, Data: true}} {
		for _, n := range []int{0, 1, 3, 4, 5, 8192} {
			var h BHS
			h[0] = byte(OpDataIn)
			h[1] = 0x81
			h.PutU32(16, 77)
			data := bytes.Repeat([]byte{0xa5}, n)
			wire := targetFrame(h, data, dg)
			if want := BHSLen + n + Pad(n) + b2i(dg.Header)*4 + b2i(dg.Data && n > 0)*4; len(wire) != want {
				t.Fatalf("%+v n=%d: %d bytes on the wire, want %d", dg, n, len(wire), want)
			}
			r := bytes.NewReader(wire)
			got, err := ReadHeader(r, dg, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if got.DataLen() != n || got.ITT() != 77 {
				t.Fatalf("header %x", got)
			}
			buf := make([]byte, n)
			if err := ReadData(r, buf, dg); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, data) || r.Len() != 0 {
				t.Fatalf("data differs or %d bytes left", r.Len())
			}
		}
	}
}

// TestReadDataFrom reads a stream of PDUs whose large segments bypass the
// buffer, with the buffer holding none, part or all of a segment, and
// checks every segment, the PDUs after it and a corrupt digest.
func TestReadDataFrom(t *testing.T) {
	for _, dg := range []Digests{{}, {Header: true, Data: true}} {
		var wire bytes.Buffer
		var segs [][]byte
		for i, n := range []int{70001, 3, 65536, 0, 131071, 8} {
			var h BHS
			h[0] = byte(OpDataIn)
			h.PutU32(16, uint32(i))
			d := make([]byte, n)
			for j := range d {
				d[j] = byte(i*31 + j)
			}
			segs = append(segs, d)
			wire.Write(targetFrame(h, d, dg))
		}
		for _, size := range []int{16, 4096, 100 << 10, 1 << 20} {
			src := bytes.NewReader(wire.Bytes())
			br := bufio.NewReaderSize(src, size)
			for i, want := range segs {
				h, err := ReadHeader(br, dg, 1<<20)
				if err != nil || h.ITT() != uint32(i) {
					t.Fatalf("%+v buffer %d: header %d: %v", dg, size, i, err)
				}
				got := make([]byte, h.DataLen())
				if err := ReadDataFrom(br, src, got, dg); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%+v buffer %d: segment %d differs (%v)", dg, size, i, err)
				}
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("%+v buffer %d: stream not consumed exactly", dg, size)
			}
		}
	}
	// A flipped bit in a directly read segment fails the digest.
	var h BHS
	h[0] = byte(OpDataIn)
	wire := targetFrame(h, bytes.Repeat([]byte{7}, 50000), Digests{Data: true})
	wire[BHSLen+40000] ^= 1
	src := bytes.NewReader(wire)
	br := bufio.NewReaderSize(src, 16)
	if _, err := ReadHeader(br, Digests{Data: true}, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := ReadDataFrom(br, src, make([]byte, 50000), Digests{Data: true}); !errors.Is(err, ErrDigest) {
		t.Fatalf("corrupt segment: %v", err)
	}
	// A stream cut inside the segment is an unexpected EOF.
	src = bytes.NewReader(wire[:BHSLen+30000])
	br = bufio.NewReaderSize(src, 16)
	if _, err := ReadHeader(br, Digests{Data: true}, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := ReadDataFrom(br, src, make([]byte, 50000), Digests{Data: true}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut segment: %v", err)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestDigestMismatch(t *testing.T) {
	var h BHS
	h[0] = byte(OpNOPIn)
	wire := targetFrame(h, []byte("ping"), Digests{Header: true, Data: true})
	bad := append([]byte(nil), wire...)
	bad[10] ^= 1
	if _, err := ReadHeader(bytes.NewReader(bad), Digests{Header: true}, 1<<20); !errors.Is(err, ErrDigest) {
		t.Fatalf("corrupt header: %v", err)
	}
	bad = append([]byte(nil), wire...)
	bad[BHSLen+4+1] ^= 1
	r := bytes.NewReader(bad)
	if _, err := ReadHeader(r, Digests{Header: true, Data: true}, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := ReadData(r, make([]byte, 4), Digests{Header: true, Data: true}); !errors.Is(err, ErrDigest) {
		t.Fatalf("corrupt data: %v", err)
	}
}

// CRC32C check value from RFC 3720 appendix B.4: 32 bytes of zeros.
func TestCRC32CKnownValue(t *testing.T) {
	if got := CRC32C(make([]byte, 32)); got != 0x8a9136aa {
		t.Fatalf("CRC32C(32 zero bytes) = %08x, want 8a9136aa", got)
	}
}

func TestTooLongAndTruncated(t *testing.T) {
	var h BHS
	h[0] = byte(OpSCSIResp)
	h.SetDataLen(1 << 20)
	if _, err := ReadHeader(bytes.NewReader(h[:]), Digests{}, 8192); !errors.Is(err, ErrTooLong) {
		t.Fatalf("oversized segment: %v", err)
	}
	if _, err := ReadHeader(bytes.NewReader(h[:20]), Digests{}, 8192); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated header: %v", err)
	}
}

func TestParseTargetRejectsInitiatorOpcodes(t *testing.T) {
	for _, op := range []Opcode{OpNOPOut, OpSCSICmd, OpLogin, OpDataOut, 0x3e} {
		var h BHS
		h[0] = byte(op)
		if _, err := ParseTarget(&h); !errors.Is(err, ErrBadOpcode) {
			t.Fatalf("%v: %v", op, err)
		}
	}
}

func TestParseDataIn(t *testing.T) {
	var h BHS
	h[0] = byte(OpDataIn)
	h[1] = 0x80 | 0x01 | 0x02
	h[3] = 0x02
	h.PutU32(16, 9)
	h.PutU32(24, 100)
	h.PutU32(40, 4096)
	h.PutU32(44, 512)
	p, err := ParseTarget(&h)
	if err != nil {
		t.Fatal(err)
	}
	d := p.(*DataIn)
	if !d.Final || !d.StatusPresent || !d.Underflow || d.Status != 2 || d.BufferOffset != 4096 || d.Residual != 512 {
		t.Fatalf("%+v", d)
	}
	if s := d.Seq(); !s.HasStatSN || s.StatSN != 100 {
		t.Fatalf("seq %+v", s)
	}
	h[1] = 0x01 // status without final
	if _, err := ParseTarget(&h); !errors.Is(err, ErrMalformed) {
		t.Fatalf("S without F: %v", err)
	}
}

func TestLoginRequestEncoding(t *testing.T) {
	l := LoginRequest{Transit: true, CSG: StageOperational, NSG: StageFullFeature, ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, TSIH: 7, ITT: 1, CmdSN: 9}
	var h BHS
	l.Encode(&h)
	if h[0] != 0x43 || h[1] != 0x87 || h[8] != 0x80 || h[15] != 7 || h.U32(24) != 9 {
		t.Fatalf("login header % x", h[:32])
	}
}

func TestText(t *testing.T) {
	kvs := []KV{{"A", "1"}, {"TargetName", "iqn.x:y"}, {"Empty", ""}}
	got, err := ParseText(EncodeText(kvs))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1] != kvs[1] || got[2] != kvs[2] {
		t.Fatalf("%v", got)
	}
	for _, bad := range []string{"A=1", "=1\x00", "novalue\x00"} {
		if _, err := ParseText([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	if v, ok := Lookup(got, "A"); !ok || v != "1" {
		t.Fatal("lookup")
	}
}

// FuzzReadPDU feeds arbitrary bytes through the receive path the
// connection uses: header, decode, data segment. It must never panic.
func FuzzReadPDU(f *testing.F) {
	var h BHS
	h[0] = byte(OpDataIn)
	h[1] = 0x81
	f.Add(targetFrame(h, []byte("hello"), Digests{}), false)
	f.Add(targetFrame(h, []byte("hello"), Digests{Header: true, Data: true}), true)
	h[0] = byte(OpLoginRsp)
	f.Add(targetFrame(h, EncodeText([]KV{{"AuthMethod", "None"}}), Digests{}), false)
	h[0] = byte(OpReject)
	f.Add(targetFrame(h, make([]byte, 48), Digests{}), false)
	f.Fuzz(func(t *testing.T, wire []byte, digests bool) {
		dg := Digests{Header: digests, Data: digests}
		r := bytes.NewReader(wire)
		for i := 0; i < 8; i++ {
			h, err := ReadHeader(r, dg, 1<<16)
			if err != nil {
				return
			}
			p, err := ParseTarget(&h)
			if err == nil {
				_ = p.Seq()
				_ = p.Tag()
			}
			buf := make([]byte, h.DataLen())
			if err := ReadData(r, buf, dg); err != nil {
				return
			}
			if h.Opcode() == OpLoginRsp || h.Opcode() == OpTextRsp {
				_, _ = ParseText(buf)
			}
			if h.Opcode() == OpReject {
				_, _ = RejectedITT(buf)
			}
		}
	})
}

// FuzzParseText checks the key=value decoder on arbitrary input.
func FuzzParseText(f *testing.F) {
	f.Add([]byte("HeaderDigest=None\x00MaxRecvDataSegmentLength=8192\x00"))
	f.Add([]byte("=\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, err := ParseText(b)
		if err != nil {
			return
		}
		again, err := ParseText(EncodeText(kvs))
		if err != nil || len(again) != len(kvs) {
			t.Fatalf("re-encoding %q: %v %v", b, again, err)
		}
	})
}
