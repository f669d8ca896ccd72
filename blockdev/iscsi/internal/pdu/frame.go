package pdu

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C returns the iSCSI digest of the given byte slices, in order.
func CRC32C(parts ...[]byte) uint32 {
	var c uint32
	for _, p := range parts {
		c = crc32.Update(c, castagnoli, p)
	}
	return c
}

// Digests says which digests a connection negotiated.
type Digests struct {
	Header, Data bool
}

// ReadHeader reads a basic header segment, skips any additional header
// segments, and checks the header digest when one was negotiated. maxData
// bounds the declared data segment length.
func ReadHeader(r io.Reader, dg Digests, maxData int) (BHS, error) {
	var h BHS
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return h, err
	}
	ahs := h.TotalAHSLen()
	var ahsBuf []byte
	if ahs > 0 {
		ahsBuf = make([]byte, ahs)
		if _, err := io.ReadFull(r, ahsBuf); err != nil {
			return h, noEOF(err)
		}
	}
	if dg.Header {
		var d [4]byte
		if _, err := io.ReadFull(r, d[:]); err != nil {
			return h, noEOF(err)
		}
		want := CRC32C(h[:], ahsBuf)
		if got := binary.LittleEndian.Uint32(d[:]); got != want {
			return h, fmt.Errorf("%w: header digest of %v is %08x, computed %08x", ErrDigest, h.Opcode(), got, want)
		}
	}
	if n := h.DataLen(); n > maxData {
		return h, fmt.Errorf("%w: %v carries %d bytes, limit %d", ErrTooLong, h.Opcode(), n, maxData)
	}
	return h, nil
}

// ReadData reads a data segment of len(dst) bytes into dst, then its
// padding and, when negotiated, its digest.
func ReadData(r io.Reader, dst []byte, dg Digests) error {
	if len(dst) == 0 {
		return nil
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return noEOF(err)
	}
	return readTail(r, dst, dg)
}

// ReadDataFrom is ReadData for a large segment: it takes what br holds
// and reads the rest straight from src, the reader under br, so that the
// bytes are copied once, not through br's buffer.
func ReadDataFrom(br *bufio.Reader, src io.Reader, dst []byte, dg Digests) error {
	if len(dst) == 0 {
		return nil
	}
	k := min(br.Buffered(), len(dst))
	if _, err := io.ReadFull(br, dst[:k]); err != nil {
		return noEOF(err)
	}
	if _, err := io.ReadFull(src, dst[k:]); err != nil {
		return noEOF(err)
	}
	return readTail(br, dst, dg)
}

// readTail reads the padding and digest after the data segment dst and
// checks the digest.
func readTail(r io.Reader, dst []byte, dg Digests) error {
	var tail [8]byte
	pad := Pad(len(dst))
	n := pad
	if dg.Data {
		n += 4
	}
	if _, err := io.ReadFull(r, tail[:n]); err != nil {
		return noEOF(err)
	}
	if dg.Data {
		want := CRC32C(dst, tail[:pad])
		if got := binary.LittleEndian.Uint32(tail[pad : pad+4]); got != want {
			return fmt.Errorf("%w: data digest is %08x, computed %08x", ErrDigest, got, want)
		}
	}
	return nil
}

// Discard reads and drops a data segment of n bytes (with padding and
// digest), checking the digest.
func Discard(r io.Reader, n int, dg Digests) error {
	buf := make([]byte, n)
	return ReadData(r, buf, dg)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

var zeroPad [4]byte

// Frame lays out a PDU for a vectored write: header (with its digest),
// then the data segment, its padding and its digest. hdr must have room
// for BHSLen+4 bytes and tail for 8; both are owned by the caller so the
// hot path does not allocate.
func Frame(h *BHS, data []byte, dg Digests, hdr *[BHSLen + 4]byte, tail *[8]byte) [][]byte {
	h.SetDataLen(len(data))
	copy(hdr[:], h[:])
	head := hdr[:BHSLen]
	if dg.Header {
		binary.LittleEndian.PutUint32(hdr[BHSLen:], CRC32C(h[:]))
		head = hdr[:BHSLen+4]
	}
	if len(data) == 0 {
		return [][]byte{head}
	}
	pad := Pad(len(data))
	copy(tail[:pad], zeroPad[:pad])
	t := tail[:pad]
	if dg.Data {
		binary.LittleEndian.PutUint32(tail[pad:], CRC32C(data, zeroPad[:pad]))
		t = tail[:pad+4]
	}
	if len(t) == 0 {
		return [][]byte{head, data}
	}
	return [][]byte{head, data, t}
}
