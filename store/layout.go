package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// BlockSize is the store's block size in bytes. Every metadata block, journal
// block and data block is one BlockSize block; the device's own block size
// must divide it.
const BlockSize = 4096

// headerSize is the size of the self-describing header at the start of every
// metadata block.
const headerSize = 32

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Kind says what a metadata block holds. It is the first thing in every
// metadata block after the magic number, so a block read from anywhere can be
// named (see blockHeader).
type Kind uint16

// Block kinds.
const (
	KindSuper          Kind = 1 // store superblock
	KindAGHeader       Kind = 2 // allocation group header and free-space bitmap
	KindInode          Kind = 3 // inode (with inline data, extents or directory buckets)
	KindDirLeaf        Kind = 4 // directory leaf: entries of one hash bucket
	KindExtents        Kind = 5 // overflow extent list of a fragmented file
	KindJournalHeader  Kind = 6 // journal header of one slot
	KindJournalDesc    Kind = 7 // journal transaction descriptor
	KindJournalRecords Kind = 8 // application records of a transaction
	KindJournalCommit  Kind = 9 // journal transaction commit record
)

func (k Kind) String() string {
	switch k {
	case KindSuper:
		return "superblock"
	case KindAGHeader:
		return "allocation group header"
	case KindInode:
		return "inode"
	case KindDirLeaf:
		return "directory leaf"
	case KindExtents:
		return "extent list"
	case KindJournalHeader:
		return "journal header"
	case KindJournalDesc:
		return "journal descriptor"
	case KindJournalRecords:
		return "journal records"
	case KindJournalCommit:
		return "journal commit"
	}
	return fmt.Sprintf("kind %d", uint16(k))
}

const blockMagic = 0x53484f4c // "SHOL"

// blockHeader is the self-describing head of every metadata block:
//
//	0  magic     uint32
//	4  kind      uint16
//	6  version   uint16
//	8  block     uint64  the block's own number (catches misdirected writes)
//	16 owner     uint64  owning inode number (0 for store-wide blocks)
//	24 gen       uint32  owner's generation
//	28 crc       uint32  CRC-32C (Castagnoli) of the block with this field zero
type blockHeader struct {
	Kind  Kind
	Block uint64
	Owner uint64
	Gen   uint32
}

const layoutVersion = 1

var zeroSum [4]byte

// blockSum is the CRC-32C of block b as if its checksum field (bytes
// 28..31) were zero. It only reads b: cached block images are shared by
// every reader of a node and must never be written, not even to put back
// what was there.
func blockSum(b []byte) uint32 {
	sum := crc32.Update(0, castagnoli, b[:28])
	sum = crc32.Update(sum, castagnoli, zeroSum[:])
	return crc32.Update(sum, castagnoli, b[32:])
}

// sealBlock writes h into b and computes its checksum. b is BlockSize long
// and private to the caller: a block image must not be sealed once it has
// been cached or handed to the journal (images are immutable from then on;
// a change makes a new image).
func sealBlock(b []byte, h blockHeader) {
	binary.LittleEndian.PutUint32(b[0:], blockMagic)
	binary.LittleEndian.PutUint16(b[4:], uint16(h.Kind))
	binary.LittleEndian.PutUint16(b[6:], layoutVersion)
	binary.LittleEndian.PutUint64(b[8:], h.Block)
	binary.LittleEndian.PutUint64(b[16:], h.Owner)
	binary.LittleEndian.PutUint32(b[24:], h.Gen)
	binary.LittleEndian.PutUint32(b[28:], blockSum(b))
}

// openBlock checks b's header and checksum and that it is a block of kind
// want at block number blk. It returns the header. It only reads b, so
// many readers may open one cached image at once.
func openBlock(b []byte, blk uint64, want Kind) (blockHeader, error) {
	var h blockHeader
	if len(b) != BlockSize {
		return h, fmt.Errorf("%w: block %d is %d bytes", ErrCorrupt, blk, len(b))
	}
	if binary.LittleEndian.Uint32(b[0:]) != blockMagic {
		return h, fmt.Errorf("%w: block %d: no block magic (want %s)", ErrCorrupt, blk, want)
	}
	h.Kind = Kind(binary.LittleEndian.Uint16(b[4:]))
	h.Block = binary.LittleEndian.Uint64(b[8:])
	h.Owner = binary.LittleEndian.Uint64(b[16:])
	h.Gen = binary.LittleEndian.Uint32(b[24:])
	sum := binary.LittleEndian.Uint32(b[28:])
	if v := binary.LittleEndian.Uint16(b[6:]); v != layoutVersion {
		return h, fmt.Errorf("%w: block %d: layout version %d, this build reads %d", ErrCorrupt, blk, v, layoutVersion)
	}
	got := blockSum(b)
	if got != sum {
		return h, fmt.Errorf("%w: block %d (%s of inode %d): checksum %08x, computed %08x", ErrCorrupt, blk, h.Kind, h.Owner, sum, got)
	}
	if h.Block != blk {
		return h, fmt.Errorf("%w: block %d holds the %s of block %d (misdirected write)", ErrCorrupt, blk, h.Kind, h.Block)
	}
	if want != 0 && h.Kind != want {
		return h, fmt.Errorf("%w: block %d is a %s of inode %d, want a %s", ErrCorrupt, blk, h.Kind, h.Owner, want)
	}
	return h, nil
}

// enc and dec are little cursors over a block body.
type enc struct {
	b   []byte
	off int
}

func (e *enc) u8(v uint8)   { e.b[e.off] = v; e.off++ }
func (e *enc) u16(v uint16) { binary.LittleEndian.PutUint16(e.b[e.off:], v); e.off += 2 }
func (e *enc) u32(v uint32) { binary.LittleEndian.PutUint32(e.b[e.off:], v); e.off += 4 }
func (e *enc) u64(v uint64) { binary.LittleEndian.PutUint64(e.b[e.off:], v); e.off += 8 }
func (e *enc) i64(v int64)  { e.u64(uint64(v)) }
func (e *enc) bytes(p []byte) {
	copy(e.b[e.off:], p)
	e.off += len(p)
}

type dec struct {
	b   []byte
	off int
	err error
}

func (d *dec) need(n int) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || d.off+n > len(d.b) {
		d.err = fmt.Errorf("%w: field at offset %d runs past the block", ErrCorrupt, d.off)
		return false
	}
	return true
}
func (d *dec) u8() uint8 {
	if !d.need(1) {
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}
func (d *dec) u16() uint16 {
	if !d.need(2) {
		return 0
	}
	v := binary.LittleEndian.Uint16(d.b[d.off:])
	d.off += 2
	return v
}
func (d *dec) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v
}
func (d *dec) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}
func (d *dec) i64() int64 { return int64(d.u64()) }
func (d *dec) bytes(n int) []byte {
	if !d.need(n) {
		return nil
	}
	v := append([]byte(nil), d.b[d.off:d.off+n]...)
	d.off += n
	return v
}

// Superblock describes the store's layout. It lives in block 0.
type Superblock struct {
	UUID          [16]byte
	Blocks        uint64 // total blocks of the store
	Slots         uint32 // node slots, one journal each
	JournalStart  uint64 // first block of slot 0's journal
	JournalBlocks uint32 // blocks per journal, header included
	AGStart       uint64 // first block of allocation group 0
	AGCount       uint32
	AGBlocks      uint32 // blocks per allocation group (the last may be shorter)
	Root          uint64 // inode number of the root directory
	Created       int64  // Unix nanoseconds
	Label         string
}

const maxLabel = 64

func (sb *Superblock) encode() []byte {
	b := make([]byte, BlockSize)
	e := enc{b: b, off: headerSize}
	e.bytes(sb.UUID[:])
	e.u64(sb.Blocks)
	e.u32(sb.Slots)
	e.u64(sb.JournalStart)
	e.u32(sb.JournalBlocks)
	e.u64(sb.AGStart)
	e.u32(sb.AGCount)
	e.u32(sb.AGBlocks)
	e.u64(sb.Root)
	e.i64(sb.Created)
	e.u8(uint8(len(sb.Label)))
	e.bytes([]byte(sb.Label))
	sealBlock(b, blockHeader{Kind: KindSuper, Block: 0})
	return b
}

// DecodeSuperblock decodes and checks block 0 of a store.
func DecodeSuperblock(b []byte) (*Superblock, error) {
	if _, err := openBlock(b, 0, KindSuper); err != nil {
		return nil, fmt.Errorf("store superblock: %w", err)
	}
	d := dec{b: b, off: headerSize}
	sb := &Superblock{}
	copy(sb.UUID[:], d.bytes(16))
	sb.Blocks = d.u64()
	sb.Slots = d.u32()
	sb.JournalStart = d.u64()
	sb.JournalBlocks = d.u32()
	sb.AGStart = d.u64()
	sb.AGCount = d.u32()
	sb.AGBlocks = d.u32()
	sb.Root = d.u64()
	sb.Created = d.i64()
	n := int(d.u8())
	sb.Label = string(d.bytes(n))
	if d.err != nil {
		return nil, fmt.Errorf("store superblock: %w", d.err)
	}
	if err := sb.validate(); err != nil {
		return nil, err
	}
	return sb, nil
}

func (sb *Superblock) validate() error {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: store superblock: %s", ErrCorrupt, fmt.Sprintf(f, a...))
	}
	switch {
	case sb.Slots == 0 || sb.Slots > MaxSlots:
		return bad("%d slots (1..%d)", sb.Slots, MaxSlots)
	case sb.JournalBlocks < minJournalBlocks:
		return bad("journal of %d blocks (at least %d)", sb.JournalBlocks, minJournalBlocks)
	case sb.JournalStart < 1 || sb.JournalStart > maxAlign:
		return bad("journals start at block %d (1..%d)", sb.JournalStart, maxAlign)
	case sb.AGStart != sb.JournalStart+uint64(sb.Slots)*uint64(sb.JournalBlocks):
		return bad("allocation groups start at block %d, journals end at %d", sb.AGStart, sb.JournalStart+uint64(sb.Slots)*uint64(sb.JournalBlocks))
	case sb.AGBlocks < minAGBlocks || sb.AGBlocks > maxAGBlocks:
		return bad("allocation groups of %d blocks (%d..%d)", sb.AGBlocks, minAGBlocks, maxAGBlocks)
	case sb.AGCount == 0:
		return bad("no allocation groups")
	case sb.AGStart+uint64(sb.AGCount-1)*uint64(sb.AGBlocks) >= sb.Blocks:
		return bad("%d allocation groups of %d blocks do not fit in %d blocks", sb.AGCount, sb.AGBlocks, sb.Blocks)
	case sb.AGStart+uint64(sb.AGCount)*uint64(sb.AGBlocks) < sb.Blocks:
		return bad("allocation groups end before the store's %d blocks", sb.Blocks)
	case sb.Root < sb.AGStart || sb.Root >= sb.Blocks:
		return bad("root inode %d outside the allocation groups", sb.Root)
	case len(sb.Label) > maxLabel:
		return bad("label of %d bytes", len(sb.Label))
	}
	return nil
}

// agOf returns the allocation group holding block blk and its first block.
func (sb *Superblock) agOf(blk uint64) (int, uint64) {
	ag := int((blk - sb.AGStart) / uint64(sb.AGBlocks))
	return ag, sb.AGStart + uint64(ag)*uint64(sb.AGBlocks)
}

// agRange returns the first block of ag and its length in blocks.
func (sb *Superblock) agRange(ag int) (uint64, uint32) {
	start := sb.AGStart + uint64(ag)*uint64(sb.AGBlocks)
	n := uint64(sb.AGBlocks)
	if start+n > sb.Blocks {
		n = sb.Blocks - start
	}
	return start, uint32(n)
}

func (sb *Superblock) journalStart(slot int) uint64 {
	return sb.JournalStart + uint64(slot)*uint64(sb.JournalBlocks)
}

// Limits of the layout.
const (
	MaxSlots         = 64
	minJournalBlocks = 32
	minAGBlocks      = 64
	// maxAlign is the largest alignment of journals and groups, in
	// blocks (64 MiB, the mirror's largest region).
	maxAlign = 16384
	// The bitmap of an allocation group fills its header block after the
	// header and the counters.
	agBitmapOff = headerSize + 32
	maxAGBlocks = (BlockSize - agBitmapOff) * 8
)

// agHeader is an allocation group's header block: counters and the bitmap
// of used blocks (bit set = used; bit 0 is the header itself).
type agHeader struct {
	Free    uint32 // free blocks
	NextGen uint32 // next inode generation handed out in this group
	Bitmap  []byte // (blocks+7)/8 bytes
}

func (a *agHeader) encode(blk uint64) []byte {
	b := make([]byte, BlockSize)
	e := enc{b: b, off: headerSize}
	e.u32(a.Free)
	e.u32(a.NextGen)
	e.u32(uint32(len(a.Bitmap)))
	copy(b[agBitmapOff:], a.Bitmap)
	sealBlock(b, blockHeader{Kind: KindAGHeader, Block: blk})
	return b
}

func decodeAGHeader(b []byte, blk uint64) (*agHeader, error) {
	if _, err := openBlock(b, blk, KindAGHeader); err != nil {
		return nil, err
	}
	d := dec{b: b, off: headerSize}
	a := &agHeader{Free: d.u32(), NextGen: d.u32()}
	n := int(d.u32())
	if d.err != nil || n > BlockSize-agBitmapOff {
		return nil, fmt.Errorf("%w: allocation group header %d: bitmap of %d bytes", ErrCorrupt, blk, n)
	}
	a.Bitmap = append([]byte(nil), b[agBitmapOff:agBitmapOff+n]...)
	return a, nil
}

// fits says whether a's bitmap has the size of allocation group ag of sb
// (decodeAGHeader cannot tell: it knows the block, not the group).
func (a *agHeader) fits(sb *Superblock, ag int) bool {
	_, n := sb.agRange(ag)
	return len(a.Bitmap) == int((n+7)/8)
}

func bitGet(bm []byte, i uint32) bool { return bm[i/8]&(1<<(i%8)) != 0 }
func bitSet(bm []byte, i uint32)      { bm[i/8] |= 1 << (i % 8) }
func bitClear(bm []byte, i uint32)    { bm[i/8] &^= 1 << (i % 8) }

// File types kept in inodes and directory entries.
const (
	typeFile uint8 = 1
	typeDir  uint8 = 2
)

// Inode layout: the fixed fields, then a body whose meaning depends on the
// type and layout flags: inline file data, the extent list (or a pointer to
// the overflow extent blocks), or a directory's bucket table.
const (
	inodeFixed     = headerSize + 64
	inodeBody      = BlockSize - inodeFixed
	dirBuckets     = 256
	extentSize     = 20 // file block u64, disk block u64, count u32
	inlineExtents  = inodeBody / extentSize
	extentsPerBlk  = (BlockSize - headerSize - 16) / extentSize
	maxInlineData  = inodeBody
	layoutInline   = 0 // file data inline in the body
	layoutExtents  = 1 // extent list in the body
	layoutOverflow = 2 // extent list in a chain of extent blocks; body holds the first block number
)

// Extent maps Count file blocks starting at file block File to disk blocks
// starting at Disk.
type Extent struct {
	File  uint64
	Disk  uint64
	Count uint32
}

// inode is the decoded form of an inode block.
type inode struct {
	Ino     uint64
	Gen     uint32
	Type    uint8
	Layout  uint8
	Mode    uint32 // permission bits (fs.FileMode & fs.ModePerm)
	Nlink   uint32
	Size    int64
	Mtime   int64 // Unix nanoseconds
	Ctime   int64
	Parent  uint64 // directories: the parent directory (root: itself)
	Entries uint64 // directories: number of entries

	Inline  []byte   // layoutInline file data
	Extents []Extent // layoutExtents / layoutOverflow (decoded, whole list)
	ExtBlk  uint64   // layoutOverflow: first extent block
	Buckets []uint64 // directories: first leaf of each bucket (0 = empty)
}

func (in *inode) encode() []byte {
	b := make([]byte, BlockSize)
	e := enc{b: b, off: headerSize}
	e.u8(in.Type)
	e.u8(in.Layout)
	e.u16(0)
	e.u32(in.Mode)
	e.u32(in.Nlink)
	e.u32(0)
	e.i64(in.Size)
	e.i64(in.Mtime)
	e.i64(in.Ctime)
	e.u64(in.Parent)
	e.u64(in.Entries)
	e.u32(uint32(len(in.Inline)))
	e.u32(uint32(len(in.Extents)))
	e.off = inodeFixed
	switch {
	case in.Type == typeDir:
		for i := 0; i < dirBuckets; i++ {
			var v uint64
			if i < len(in.Buckets) {
				v = in.Buckets[i]
			}
			e.u64(v)
		}
	case in.Layout == layoutInline:
		e.bytes(in.Inline)
	case in.Layout == layoutExtents:
		for _, x := range in.Extents {
			e.u64(x.File)
			e.u64(x.Disk)
			e.u32(x.Count)
		}
	case in.Layout == layoutOverflow:
		e.u64(in.ExtBlk)
	}
	sealBlock(b, blockHeader{Kind: KindInode, Block: in.Ino, Owner: in.Ino, Gen: in.Gen})
	return b
}

// decodeInode decodes inode block b at block number ino. An overflow
// extent list is not read (Extents is nil; ExtBlk says where it starts).
func decodeInode(b []byte, ino uint64) (*inode, error) {
	h, err := openBlock(b, ino, KindInode)
	if err != nil {
		return nil, err
	}
	if h.Owner != ino {
		return nil, fmt.Errorf("%w: inode block %d names inode %d as its owner", ErrCorrupt, ino, h.Owner)
	}
	d := dec{b: b, off: headerSize}
	in := &inode{Ino: ino, Gen: h.Gen}
	in.Type = d.u8()
	in.Layout = d.u8()
	d.u16()
	in.Mode = d.u32()
	in.Nlink = d.u32()
	d.u32()
	in.Size = d.i64()
	in.Mtime = d.i64()
	in.Ctime = d.i64()
	in.Parent = d.u64()
	in.Entries = d.u64()
	nInline := int(d.u32())
	nExt := int(d.u32())
	if d.err != nil {
		return nil, d.err
	}
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: inode %d: %s", ErrCorrupt, ino, fmt.Sprintf(f, a...))
	}
	if in.Size < 0 {
		return nil, bad("negative size %d", in.Size)
	}
	d.off = inodeFixed
	switch in.Type {
	case typeDir:
		in.Buckets = make([]uint64, dirBuckets)
		for i := range in.Buckets {
			in.Buckets[i] = d.u64()
		}
	case typeFile:
		switch in.Layout {
		case layoutInline:
			if nInline > maxInlineData || int64(nInline) != in.Size {
				return nil, bad("inline data of %d bytes for size %d", nInline, in.Size)
			}
			in.Inline = d.bytes(nInline)
		case layoutExtents:
			if nExt > inlineExtents {
				return nil, bad("%d inline extents (max %d)", nExt, inlineExtents)
			}
			in.Extents = make([]Extent, nExt)
			for i := range in.Extents {
				in.Extents[i] = Extent{File: d.u64(), Disk: d.u64(), Count: d.u32()}
			}
		case layoutOverflow:
			in.ExtBlk = d.u64()
		default:
			return nil, bad("unknown layout %d", in.Layout)
		}
	default:
		return nil, bad("unknown type %d", in.Type)
	}
	if d.err != nil {
		return nil, d.err
	}
	return in, nil
}

// extentBlock is one block of an overflow extent list.
type extentBlock struct {
	Next    uint64
	Extents []Extent
}

func (x *extentBlock) encode(blk, owner uint64, gen uint32) []byte {
	b := make([]byte, BlockSize)
	e := enc{b: b, off: headerSize}
	e.u64(x.Next)
	e.u32(uint32(len(x.Extents)))
	e.u32(0)
	for _, v := range x.Extents {
		e.u64(v.File)
		e.u64(v.Disk)
		e.u32(v.Count)
	}
	sealBlock(b, blockHeader{Kind: KindExtents, Block: blk, Owner: owner, Gen: gen})
	return b
}

func decodeExtentBlock(b []byte, blk uint64) (*extentBlock, blockHeader, error) {
	h, err := openBlock(b, blk, KindExtents)
	if err != nil {
		return nil, h, err
	}
	d := dec{b: b, off: headerSize}
	x := &extentBlock{Next: d.u64()}
	n := int(d.u32())
	d.u32()
	if n > extentsPerBlk {
		return nil, h, fmt.Errorf("%w: extent block %d of inode %d: %d extents (max %d)", ErrCorrupt, blk, h.Owner, n, extentsPerBlk)
	}
	x.Extents = make([]Extent, n)
	for i := range x.Extents {
		x.Extents[i] = Extent{File: d.u64(), Disk: d.u64(), Count: d.u32()}
	}
	return x, h, d.err
}

// dirEntry is one name in a directory.
type dirEntry struct {
	Name string
	Ino  uint64
	Gen  uint32
	Type uint8
}

const (
	leafFixed = headerSize + 16
	// MaxNameLen is the longest name of one path element, in bytes.
	MaxNameLen = 255
)

func (de dirEntry) size() int { return 8 + 4 + 1 + 1 + len(de.Name) }

// dirLeaf is a directory leaf block: entries of one hash bucket and the
// next leaf of that bucket.
type dirLeaf struct {
	Next    uint64
	Entries []dirEntry
}

func (l *dirLeaf) used() int {
	n := leafFixed
	for _, e := range l.Entries {
		n += e.size()
	}
	return n
}

func (l *dirLeaf) encode(blk, owner uint64, gen uint32) []byte {
	b := make([]byte, BlockSize)
	e := enc{b: b, off: headerSize}
	e.u64(l.Next)
	e.u32(uint32(len(l.Entries)))
	e.u32(0)
	for _, de := range l.Entries {
		e.u64(de.Ino)
		e.u32(de.Gen)
		e.u8(de.Type)
		e.u8(uint8(len(de.Name)))
		e.bytes([]byte(de.Name))
	}
	sealBlock(b, blockHeader{Kind: KindDirLeaf, Block: blk, Owner: owner, Gen: gen})
	return b
}

func decodeDirLeaf(b []byte, blk uint64) (*dirLeaf, blockHeader, error) {
	h, err := openBlock(b, blk, KindDirLeaf)
	if err != nil {
		return nil, h, err
	}
	d := dec{b: b, off: headerSize}
	l := &dirLeaf{Next: d.u64()}
	n := int(d.u32())
	d.u32()
	if n > BlockSize/14 {
		return nil, h, fmt.Errorf("%w: directory leaf %d of inode %d: %d entries", ErrCorrupt, blk, h.Owner, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		de := dirEntry{Ino: d.u64(), Gen: d.u32(), Type: d.u8()}
		nl := int(d.u8())
		de.Name = string(d.bytes(nl))
		if d.err == nil && (nl == 0 || !validName(de.Name)) {
			return nil, h, fmt.Errorf("%w: directory leaf %d of inode %d: bad name %q", ErrCorrupt, blk, h.Owner, de.Name)
		}
		l.Entries = append(l.Entries, de)
	}
	if d.err != nil {
		return nil, h, fmt.Errorf("directory leaf %d of inode %d: %w", blk, h.Owner, d.err)
	}
	return l, h, nil
}

// validName reports whether s may be one path element.
func validName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '/' || s[i] == 0 {
			return false
		}
	}
	return true
}

// bucketOf hashes a name to its directory bucket (FNV-1a).
func bucketOf(name string) int {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return int(h % dirBuckets)
}
