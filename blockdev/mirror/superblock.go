package mirror

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"

	"github.com/google/uuid"
)

// SuperblockMagic opens every leg of a Shoal volume.
const SuperblockMagic = "SHOALVOL"

// SuperblockVersion is the on-disk format version this package writes.
const SuperblockVersion = 1

const (
	maxClusterID = 63
	maxLegAddr   = 127
	sbLegsOffset = 176
	sbLegEntry   = 16 + 1 + 1 + 2 + 4 + 8 + 1 + maxLegAddr // 160
	sbCRCOffset  = SuperblockSize - 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// LegState is a leg's state in the volume's leg table.
type LegState uint8

// Leg states.
const (
	// LegInSync legs hold every acknowledged write; reads use them.
	LegInSync LegState = 1
	// LegFailed legs get no I/O; writes they miss stay marked in the
	// write-intent bitmaps.
	LegFailed LegState = 2
	// LegResyncing legs get every write but no reads until a resync
	// copies what they missed.
	LegResyncing LegState = 3
)

func (s LegState) String() string {
	switch s {
	case LegInSync:
		return "in-sync"
	case LegFailed:
		return "failed"
	case LegResyncing:
		return "resyncing"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText makes states readable in JSON.
func (s LegState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a state name.
func (s *LegState) UnmarshalText(b []byte) error {
	for _, c := range []LegState{LegInSync, LegFailed, LegResyncing} {
		if c.String() == string(b) {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("mirror: unknown leg state %q", b)
}

// LegInfo is one leg in the leg table.
type LegInfo struct {
	UUID  uuid.UUID `json:"uuid"`
	Addr  string    `json:"addr"`
	State LegState  `json:"state"`
	// Full asks a resync to copy every region (a new leg), not just those
	// marked in the bitmaps.
	Full bool `json:"full,omitempty"`
	// Cursor is the first region a resync has not finished yet; it makes
	// an interrupted resync resumable.
	Cursor int64 `json:"cursor,omitempty"`
}

// LegTable is the cluster-wide view of the legs. Every change bumps
// Generation; the copy in the leg state store and the superblocks agree on
// the newest generation.
type LegTable struct {
	Generation uint64    `json:"generation"`
	Legs       []LegInfo `json:"legs"`
}

// Clone returns a deep copy.
func (t LegTable) Clone() LegTable {
	t.Legs = append([]LegInfo(nil), t.Legs...)
	return t
}

// Find returns the index of the leg with id, or -1.
func (t LegTable) Find(id uuid.UUID) int {
	for i, l := range t.Legs {
		if l.UUID == id {
			return i
		}
	}
	return -1
}

// Lookup resolves an operator's name for a leg: its index in the table,
// its address or its UUID. An unknown name is an error naming the table's
// size.
func (t LegTable) Lookup(spec string) (int, error) {
	if i, err := strconv.Atoi(spec); err == nil {
		if i < 0 || i >= len(t.Legs) {
			return -1, fmt.Errorf("leg %d out of range: the volume has %d legs", i, len(t.Legs))
		}
		return i, nil
	}
	for i, l := range t.Legs {
		if l.Addr == spec || l.UUID.String() == spec {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no leg %q in the volume (give an index, address or UUID)", spec)
}

// InSync counts the in-sync legs.
func (t LegTable) InSync() int {
	n := 0
	for _, l := range t.Legs {
		if l.State == LegInSync {
			n++
		}
	}
	return n
}

// Validate checks the table on its own.
func (t LegTable) Validate() error {
	if len(t.Legs) == 0 || len(t.Legs) > MaxLegs {
		return fmt.Errorf("%w: %d legs, want 1 to %d", ErrBadSuperblock, len(t.Legs), MaxLegs)
	}
	seen := map[uuid.UUID]bool{}
	for i, l := range t.Legs {
		if seen[l.UUID] {
			return fmt.Errorf("%w: leg %d: duplicate leg UUID %s", ErrBadSuperblock, i, l.UUID)
		}
		seen[l.UUID] = true
		if l.State != LegInSync && l.State != LegFailed && l.State != LegResyncing {
			return fmt.Errorf("%w: leg %d: unknown state %d", ErrBadSuperblock, i, l.State)
		}
		if len(l.Addr) > maxLegAddr {
			return fmt.Errorf("%w: leg %d: address longer than %d bytes", ErrBadSuperblock, i, maxLegAddr)
		}
		if l.Cursor < 0 {
			return fmt.Errorf("%w: leg %d: negative resync cursor", ErrBadSuperblock, i)
		}
	}
	if t.InSync() == 0 {
		return fmt.Errorf("%w: no in-sync leg", ErrBadSuperblock)
	}
	return nil
}

// Superblock is the first block of every leg.
type Superblock struct {
	Version   uint32
	Volume    uuid.UUID // the volume's identity
	Self      uuid.UUID // this leg's identity; one of Table.Legs
	ClusterID string    // the cluster the volume belongs to
	Geometry  Geometry
	Table     LegTable
}

// EncodeSuperblock renders sb into SuperblockSize bytes.
func EncodeSuperblock(sb Superblock) ([]byte, error) {
	if len(sb.ClusterID) > maxClusterID {
		return nil, fmt.Errorf("%w: cluster ID longer than %d bytes", ErrBadSuperblock, maxClusterID)
	}
	if err := sb.Table.Validate(); err != nil {
		return nil, err
	}
	if sb.Table.Find(sb.Self) < 0 {
		return nil, fmt.Errorf("%w: leg %s is not in its own leg table", ErrBadSuperblock, sb.Self)
	}
	g := sb.Geometry
	b := make([]byte, SuperblockSize)
	le := binary.LittleEndian
	copy(b[0:8], SuperblockMagic)
	le.PutUint32(b[8:], SuperblockVersion)
	copy(b[16:32], sb.Volume[:])
	copy(b[32:48], sb.Self[:])
	le.PutUint64(b[48:], sb.Table.Generation)
	le.PutUint64(b[56:], uint64(g.RegionSize))
	le.PutUint32(b[64:], uint32(g.BlockSize))
	le.PutUint32(b[68:], uint32(g.Slots))
	le.PutUint64(b[72:], uint64(g.Regions))
	le.PutUint32(b[80:], uint32(len(sb.Table.Legs)))
	b[112] = byte(len(sb.ClusterID))
	copy(b[113:], sb.ClusterID)
	for i, l := range sb.Table.Legs {
		e := b[sbLegsOffset+i*sbLegEntry:]
		copy(e[0:16], l.UUID[:])
		e[16] = byte(l.State)
		if l.Full {
			e[17] = 1
		}
		le.PutUint64(e[24:], uint64(l.Cursor))
		e[32] = byte(len(l.Addr))
		copy(e[33:], l.Addr)
	}
	le.PutUint32(b[sbCRCOffset:], crc32.Checksum(b[:sbCRCOffset], castagnoli))
	return b, nil
}

// DecodeSuperblock parses a superblock, checking magic, version, checksum
// and that the fields agree with each other.
func DecodeSuperblock(b []byte) (Superblock, error) {
	var sb Superblock
	if len(b) < SuperblockSize {
		return sb, fmt.Errorf("%w: %d bytes, want %d", ErrBadSuperblock, len(b), SuperblockSize)
	}
	b = b[:SuperblockSize]
	if string(b[0:8]) != SuperblockMagic {
		if bytes.Equal(b[0:8], make([]byte, 8)) {
			return sb, fmt.Errorf("%w: no superblock (the leg is blank or not formatted)", ErrBadSuperblock)
		}
		return sb, fmt.Errorf("%w: bad magic %q (not a Shoal volume leg)", ErrBadSuperblock, b[0:8])
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(b[sbCRCOffset:]), crc32.Checksum(b[:sbCRCOffset], castagnoli); got != want {
		return sb, fmt.Errorf("%w: checksum %08x, computed %08x", ErrBadSuperblock, got, want)
	}
	sb.Version = le.Uint32(b[8:])
	if sb.Version != SuperblockVersion {
		return sb, fmt.Errorf("%w: version %d, this program knows %d", ErrBadSuperblock, sb.Version, SuperblockVersion)
	}
	copy(sb.Volume[:], b[16:32])
	copy(sb.Self[:], b[32:48])
	sb.Table.Generation = le.Uint64(b[48:])
	regionSize := int64(le.Uint64(b[56:]))
	blockSize := int(le.Uint32(b[64:]))
	slots := int(le.Uint32(b[68:]))
	regions := int64(le.Uint64(b[72:]))
	g, err := NewGeometry(regionSize, blockSize, slots, regions)
	if err != nil {
		return sb, fmt.Errorf("%w: %v", ErrBadSuperblock, err)
	}
	sb.Geometry = g
	nlegs := int(le.Uint32(b[80:]))
	if nlegs < 1 || nlegs > MaxLegs {
		return sb, fmt.Errorf("%w: %d legs, want 1 to %d", ErrBadSuperblock, nlegs, MaxLegs)
	}
	n := int(b[112])
	if n > maxClusterID {
		return sb, fmt.Errorf("%w: cluster ID length %d", ErrBadSuperblock, n)
	}
	sb.ClusterID = string(b[113 : 113+n])
	for i := 0; i < nlegs; i++ {
		e := b[sbLegsOffset+i*sbLegEntry:]
		var l LegInfo
		copy(l.UUID[:], e[0:16])
		l.State = LegState(e[16])
		l.Full = e[17] == 1
		l.Cursor = int64(le.Uint64(e[24:]))
		an := int(e[32])
		if an > maxLegAddr {
			return sb, fmt.Errorf("%w: leg %d: address length %d", ErrBadSuperblock, i, an)
		}
		l.Addr = string(e[33 : 33+an])
		if l.Cursor > regions {
			return sb, fmt.Errorf("%w: leg %d: resync cursor %d beyond %d regions", ErrBadSuperblock, i, l.Cursor, regions)
		}
		sb.Table.Legs = append(sb.Table.Legs, l)
	}
	if err := sb.Table.Validate(); err != nil {
		return sb, err
	}
	if sb.Table.Find(sb.Self) < 0 {
		return sb, fmt.Errorf("%w: leg %s is not in its own leg table", ErrBadSuperblock, sb.Self)
	}
	return sb, nil
}
