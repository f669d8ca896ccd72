package mirror

import (
	"fmt"
	"math/bits"
)

// Fixed sizes of the on-disk layout. Every leg holds, in this order: the
// superblock, one write-intent bitmap per node slot, the per-region block
// checksums, then the data, aligned to DataAlign.
const (
	SuperblockSize  = 4096
	BitmapBlockSize = 4096
	// bitmapHeader bytes precede the bits; the last 4 bytes are a CRC.
	bitmapHeader = 32
	// RegionsPerBitmapBlock is how many regions one bitmap block covers.
	RegionsPerBitmapBlock = (BitmapBlockSize - bitmapHeader - 4) * 8
	DataAlign             = 1 << 20
	MaxLegs               = 8
	MaxSlots              = 256
	MinRegionSize         = 4096
	MaxRegionSize         = 64 << 20
	csumSize              = 4
)

// Geometry is where everything lives on a leg. It follows from the region
// size, block size, slot count and region count recorded in the superblock.
type Geometry struct {
	RegionSize int64 // bytes per region (power of two)
	BlockSize  int   // checksum and I/O granularity
	Slots      int   // node slots, each with its own bitmap
	Regions    int64 // number of regions

	BitmapOffset        int64 // first bitmap block
	BitmapBlocksPerSlot int64
	ChecksumOffset      int64 // first checksum block
	ChecksumPerRegion   int64 // bytes of checksums per region, block aligned
	DataOffset          int64 // byte 0 of the volume on the leg
}

// NewGeometry lays out a volume of the given number of regions.
func NewGeometry(regionSize int64, blockSize, slots int, regions int64) (Geometry, error) {
	g := Geometry{RegionSize: regionSize, BlockSize: blockSize, Slots: slots, Regions: regions}
	if err := g.checkParams(); err != nil {
		return Geometry{}, err
	}
	g.BitmapOffset = SuperblockSize
	g.BitmapBlocksPerSlot = (regions + RegionsPerBitmapBlock - 1) / RegionsPerBitmapBlock
	g.ChecksumOffset = g.BitmapOffset + int64(slots)*g.BitmapBlocksPerSlot*BitmapBlockSize
	per := regionSize / int64(blockSize) * csumSize
	g.ChecksumPerRegion = (per + int64(blockSize) - 1) / int64(blockSize) * int64(blockSize)
	end := g.ChecksumOffset + regions*g.ChecksumPerRegion
	g.DataOffset = (end + DataAlign - 1) / DataAlign * DataAlign
	return g, nil
}

func (g Geometry) checkParams() error {
	switch {
	case g.BlockSize < 512 || g.BlockSize > 4096 || bits.OnesCount(uint(g.BlockSize)) != 1:
		return fmt.Errorf("%w: block size %d must be a power of two from 512 to 4096", ErrBadGeometry, g.BlockSize)
	case g.RegionSize < MinRegionSize || g.RegionSize > MaxRegionSize || bits.OnesCount64(uint64(g.RegionSize)) != 1:
		return fmt.Errorf("%w: region size %d must be a power of two from %d to %d", ErrBadGeometry, g.RegionSize, MinRegionSize, MaxRegionSize)
	case g.RegionSize < 8*int64(g.BlockSize):
		return fmt.Errorf("%w: region size %d must hold at least 8 blocks of %d", ErrBadGeometry, g.RegionSize, g.BlockSize)
	case g.Slots < 1 || g.Slots > MaxSlots:
		return fmt.Errorf("%w: node slots %d must be 1 to %d", ErrBadGeometry, g.Slots, MaxSlots)
	case g.Regions < 1 || g.Regions > 1<<40:
		return fmt.Errorf("%w: region count %d out of range", ErrBadGeometry, g.Regions)
	}
	return nil
}

// FitGeometry finds the largest volume that fits on a leg of legSize bytes.
func FitGeometry(regionSize int64, blockSize, slots int, legSize int64) (Geometry, error) {
	if _, err := NewGeometry(regionSize, blockSize, slots, 1); err != nil {
		return Geometry{}, err
	}
	lo, hi := int64(0), legSize/regionSize+1
	for lo+1 < hi { // bounded: about 40 steps
		mid := (lo + hi) / 2
		g, _ := NewGeometry(regionSize, blockSize, slots, mid)
		if g.LegSize() <= legSize {
			lo = mid
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		g, _ := NewGeometry(regionSize, blockSize, slots, 1)
		return Geometry{}, fmt.Errorf("%w: leg of %d bytes is too small; one region of %d bytes needs %d", ErrBadGeometry, legSize, regionSize, g.LegSize())
	}
	return NewGeometry(regionSize, blockSize, slots, lo)
}

// VolumeSize is the usable size in bytes.
func (g Geometry) VolumeSize() int64 { return g.Regions * g.RegionSize }

// LegSize is the smallest leg that holds this layout.
func (g Geometry) LegSize() int64 { return g.DataOffset + g.VolumeSize() }

// BitmapBlockOffset is where block i of slot's bitmap lives on a leg.
func (g Geometry) BitmapBlockOffset(slot int, i int64) int64 {
	return g.BitmapOffset + (int64(slot)*g.BitmapBlocksPerSlot+i)*BitmapBlockSize
}

// ChecksumOffsetOf is where region r's checksums live on a leg.
func (g Geometry) ChecksumOffsetOf(r int64) int64 { return g.ChecksumOffset + r*g.ChecksumPerRegion }

// BlocksPerRegion is the number of checksummed blocks in a region.
func (g Geometry) BlocksPerRegion() int64 { return g.RegionSize / int64(g.BlockSize) }

// RegionOf is the region holding volume byte off.
func (g Geometry) RegionOf(off int64) int64 { return off / g.RegionSize }
