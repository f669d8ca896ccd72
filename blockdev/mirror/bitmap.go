package mirror

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"

	"github.com/google/uuid"
)

const bitmapMagic = 0x4d424853 // "SHBM"

// Bitmap is a set of region numbers, one bit per region.
type Bitmap struct {
	words []uint64
	n     int64
}

// NewBitmap returns an empty bitmap over n regions.
func NewBitmap(n int64) *Bitmap { return &Bitmap{words: make([]uint64, (n+63)/64), n: n} }

// Len is the number of regions the bitmap covers.
func (b *Bitmap) Len() int64 { return b.n }

// Set marks region r.
func (b *Bitmap) Set(r int64) { b.words[r/64] |= 1 << (uint(r) % 64) }

// Clear unmarks region r.
func (b *Bitmap) Clear(r int64) { b.words[r/64] &^= 1 << (uint(r) % 64) }

// Test reports whether region r is marked.
func (b *Bitmap) Test(r int64) bool { return b.words[r/64]&(1<<(uint(r)%64)) != 0 }

// Count is the number of marked regions.
func (b *Bitmap) Count() int64 {
	var c int
	for _, w := range b.words {
		c += bits.OnesCount64(w)
	}
	return int64(c)
}

// Merge adds every region marked in o (same length) to b.
func (b *Bitmap) Merge(o *Bitmap) {
	for i := range b.words {
		b.words[i] |= o.words[i]
	}
}

// Regions lists the marked regions in increasing order.
func (b *Bitmap) Regions() []int64 {
	var out []int64
	for i, w := range b.words {
		for w != 0 {
			t := bits.TrailingZeros64(w)
			out = append(out, int64(i)*64+int64(t))
			w &= w - 1
		}
	}
	return out
}

// Clone returns a copy.
func (b *Bitmap) Clone() *Bitmap {
	return &Bitmap{words: append([]uint64(nil), b.words...), n: b.n}
}

// BitmapBlock is one on-disk block of a slot's write-intent bitmap. Each
// block is self-contained (its own header and CRC), so a torn multi-block
// update leaves every block either old or new.
type BitmapBlock struct {
	Volume uuid.UUID
	Slot   int
	Index  int64 // block number within the slot's bitmap
	// Open is the open-volume marker: a node holds the volume open in
	// this slot. It is set by the node when it opens the volume, cleared
	// by its Close and by the recovery of the slot, so format refuses the
	// legs of a volume in use.
	Open bool
	// Bits holds RegionsPerBitmapBlock bits: bit i is region
	// Index*RegionsPerBitmapBlock+i.
	Bits []byte
}

// EncodeBitmapBlock renders the bits of regions
// [i*RegionsPerBitmapBlock, (i+1)*RegionsPerBitmapBlock) of bm.
func EncodeBitmapBlock(vol uuid.UUID, slot int, i int64, bm *Bitmap) []byte {
	return encodeBitmapBlock(vol, slot, i, bm, false)
}

// bitmapOpenFlag in header byte 12 is the open-volume marker: the slot's
// node has the volume open (see BitmapBlock.Open).
const bitmapOpenFlag = 1

func encodeBitmapBlock(vol uuid.UUID, slot int, i int64, bm *Bitmap, open bool) []byte {
	b := make([]byte, BitmapBlockSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], bitmapMagic)
	le.PutUint16(b[4:], 1)
	le.PutUint16(b[6:], uint16(slot))
	le.PutUint32(b[8:], uint32(i))
	if open {
		b[12] = bitmapOpenFlag
	}
	copy(b[16:32], vol[:])
	first := i * RegionsPerBitmapBlock
	for r := first; r < first+RegionsPerBitmapBlock && r < bm.n; r++ {
		if bm.Test(r) {
			k := r - first
			b[bitmapHeader+k/8] |= 1 << (k % 8)
		}
	}
	le.PutUint32(b[BitmapBlockSize-4:], crc32.Checksum(b[:BitmapBlockSize-4], castagnoli))
	return b
}

// IsZeroBlock reports whether b is all zero: a bitmap block never written
// (a freshly formatted leg writes every block, so this means damage or a
// leg that was never formatted).
func IsZeroBlock(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// DecodeBitmapBlock parses a bitmap block and checks that it belongs to
// volume vol, slot and index i.
func DecodeBitmapBlock(b []byte, vol uuid.UUID, slot int, i int64) (BitmapBlock, error) {
	var bb BitmapBlock
	if len(b) != BitmapBlockSize {
		return bb, fmt.Errorf("%w: %d bytes, want %d", ErrBadBitmap, len(b), BitmapBlockSize)
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != bitmapMagic {
		return bb, fmt.Errorf("%w: slot %d block %d: bad magic", ErrBadBitmap, slot, i)
	}
	if got, want := le.Uint32(b[BitmapBlockSize-4:]), crc32.Checksum(b[:BitmapBlockSize-4], castagnoli); got != want {
		return bb, fmt.Errorf("%w: slot %d block %d: checksum %08x, computed %08x", ErrBadBitmap, slot, i, got, want)
	}
	if v := le.Uint16(b[4:]); v != 1 {
		return bb, fmt.Errorf("%w: slot %d block %d: version %d", ErrBadBitmap, slot, i, v)
	}
	if b[12]&^bitmapOpenFlag != 0 || b[13] != 0 || b[14] != 0 || b[15] != 0 {
		return bb, fmt.Errorf("%w: slot %d block %d: unknown header flags %x", ErrBadBitmap, slot, i, b[12:16])
	}
	bb.Open = b[12]&bitmapOpenFlag != 0
	copy(bb.Volume[:], b[16:32])
	bb.Slot = int(le.Uint16(b[6:]))
	bb.Index = int64(le.Uint32(b[8:]))
	if bb.Volume != vol || bb.Slot != slot || bb.Index != i {
		return bb, fmt.Errorf("%w: block at slot %d index %d claims volume %s slot %d index %d", ErrBadBitmap, slot, i, bb.Volume, bb.Slot, bb.Index)
	}
	bb.Bits = b[bitmapHeader : BitmapBlockSize-4]
	return bb, nil
}

// MergeInto marks in bm every region set in the block.
func (bb BitmapBlock) MergeInto(bm *Bitmap) {
	first := bb.Index * RegionsPerBitmapBlock
	for k, c := range bb.Bits {
		for c != 0 {
			t := int64(bits.TrailingZeros8(c))
			if r := first + int64(k)*8 + t; r < bm.n {
				bm.Set(r)
			}
			c &= c - 1
		}
	}
}

// MarkBlockRange marks every region block i covers: what a damaged block
// must be assumed to hold.
func MarkBlockRange(bm *Bitmap, i int64) {
	for r := i * RegionsPerBitmapBlock; r < (i+1)*RegionsPerBitmapBlock && r < bm.n; r++ {
		bm.Set(r)
	}
}
