package mirror

import (
	"context"
	"fmt"
	"hash/crc32"

	"github.com/google/uuid"

	"github.com/shoal-ha/shoal/blockdev"
)

// FormatOptions are the choices made once, when a volume is created.
type FormatOptions struct {
	RegionSize int64     // bytes per region (power of two)
	Slots      int       // node slots
	ClusterID  string    // cluster the volume belongs to
	Volume     uuid.UUID // zero: a new random UUID
	Addrs      []string  // leg addresses, recorded for operators; may be empty
	// Force formats legs that already hold a superblock or data.
	Force bool
	// ForceWhileOpen formats legs of a volume that a node has open (an
	// open-volume marker in a slot's bitmap); without it they are refused
	// with ErrVolumeOpen, Force or not.
	ForceWhileOpen bool
	// DataIsZero says the data areas already read as zero (files just
	// created), so Format need not write zeros over them.
	DataIsZero bool
	// Progress, if set, is told how much of the zeroing is done.
	Progress func(Progress)
}

// Format writes a new, empty volume over legs. Every leg starts in sync.
// Without Force, a leg holding a superblock or any non-zero byte in its
// first block is refused.
func Format(ctx context.Context, legs []blockdev.Device, opts FormatOptions) (Superblock, error) {
	if len(legs) == 0 || len(legs) > MaxLegs {
		return Superblock{}, fmt.Errorf("%w: %d legs, want 1 to %d", ErrBadGeometry, len(legs), MaxLegs)
	}
	if len(opts.Addrs) != 0 && len(opts.Addrs) != len(legs) {
		return Superblock{}, fmt.Errorf("mirror: format: %d addresses for %d legs", len(opts.Addrs), len(legs))
	}
	bs, minSize := 0, int64(-1)
	for _, d := range legs {
		if d.BlockSize() > bs {
			bs = d.BlockSize()
		}
		if minSize < 0 || d.Size() < minSize {
			minSize = d.Size()
		}
	}
	g, err := FitGeometry(opts.RegionSize, bs, opts.Slots, minSize)
	if err != nil {
		return Superblock{}, err
	}
	for i, d := range legs {
		if !opts.ForceWhileOpen {
			if err := checkNotOpen(ctx, d); err != nil {
				return Superblock{}, fmt.Errorf("mirror: format: leg %d: %w", i, err)
			}
		}
		if !opts.Force {
			if err := checkBlank(ctx, d); err != nil {
				return Superblock{}, fmt.Errorf("mirror: format: leg %d: %w", i, err)
			}
		}
	}
	vol := opts.Volume
	if vol == (uuid.UUID{}) {
		vol = uuid.New()
	}
	table := LegTable{Generation: 1}
	for i := range legs {
		l := LegInfo{UUID: uuid.New(), State: LegInSync}
		if len(opts.Addrs) > 0 {
			l.Addr = opts.Addrs[i]
		}
		table.Legs = append(table.Legs, l)
	}
	sb := Superblock{Version: SuperblockVersion, Volume: vol, ClusterID: opts.ClusterID, Geometry: g, Table: table}
	if _, err := EncodeSuperblock(withSelf(sb, table.Legs[0].UUID)); err != nil {
		return Superblock{}, err
	}
	for i, d := range legs {
		// The old superblock goes first, so an interrupted format never
		// leaves a leg that looks like a volume with half-written metadata.
		if err := d.WriteAt(ctx, make([]byte, SuperblockSize), 0); err != nil {
			return Superblock{}, fmt.Errorf("mirror: format: leg %d: %w", i, err)
		}
		if err := writeEmptyMetadata(ctx, d, g, vol, !opts.DataIsZero, i, len(legs), opts.Progress); err != nil {
			return Superblock{}, fmt.Errorf("mirror: format: leg %d: %w", i, err)
		}
		if err := d.Flush(ctx); err != nil {
			return Superblock{}, fmt.Errorf("mirror: format: leg %d: %w", i, err)
		}
	}
	for i, d := range legs {
		if err := writeSuperblock(ctx, d, withSelf(sb, table.Legs[i].UUID)); err != nil {
			return Superblock{}, fmt.Errorf("mirror: format: leg %d: %w", i, err)
		}
	}
	return sb, nil
}

func withSelf(sb Superblock, self uuid.UUID) Superblock {
	sb.Self = self
	return sb
}

func checkBlank(ctx context.Context, d blockdev.Device) error {
	b := make([]byte, SuperblockSize)
	if err := d.ReadAt(ctx, b, 0); err != nil {
		return err
	}
	if sb, err := DecodeSuperblock(b); err == nil {
		return fmt.Errorf("%w: it holds a superblock of volume %s (cluster %q, leg table generation %d)", ErrLegNotBlank, sb.Volume, sb.ClusterID, sb.Table.Generation)
	}
	if !IsZeroBlock(b) {
		return fmt.Errorf("%w: its first block holds data", ErrLegNotBlank)
	}
	return nil
}

// checkNotOpen refuses a leg of a volume that a node has open.
func checkNotOpen(ctx context.Context, d blockdev.Device) error {
	sb, err := readSuperblock(ctx, d)
	if err != nil {
		return nil // not a leg of a volume: nobody has it open
	}
	slots, err := OpenSlots(ctx, d)
	if err != nil {
		return fmt.Errorf("read open-volume markers: %w", err)
	}
	if len(slots) > 0 {
		return fmt.Errorf("%w: volume %s (cluster %q) is open in node slots %v", ErrVolumeOpen, sb.Volume, sb.ClusterID, slots)
	}
	return nil
}

func writeSuperblock(ctx context.Context, d blockdev.Device, sb Superblock) error {
	b, err := EncodeSuperblock(sb)
	if err != nil {
		return err
	}
	if err := d.WriteAt(ctx, b, 0); err != nil {
		return err
	}
	return d.Flush(ctx)
}

// writeEmptyMetadata writes clean bitmaps for every slot, the checksums of
// all-zero data and, if zero is set, zeros over the data area.
func writeEmptyMetadata(ctx context.Context, d blockdev.Device, g Geometry, vol uuid.UUID, zero bool, leg, legs int, progress func(Progress)) error {
	empty := NewBitmap(g.Regions)
	for s := 0; s < g.Slots; s++ {
		for i := int64(0); i < g.BitmapBlocksPerSlot; i++ {
			if err := d.WriteAt(ctx, EncodeBitmapBlock(vol, s, i, empty), g.BitmapBlockOffset(s, i)); err != nil {
				return err
			}
		}
	}
	zc := zeroChecksums(g)
	const chunk = 1 << 20
	per := chunk / g.ChecksumPerRegion
	if per < 1 {
		per = 1
	}
	buf := make([]byte, 0, per*g.ChecksumPerRegion)
	for r := int64(0); r < g.Regions; r += per {
		n := min(per, g.Regions-r)
		buf = buf[:0]
		for k := int64(0); k < n; k++ {
			buf = append(buf, zc...)
		}
		if err := d.WriteAt(ctx, buf, g.ChecksumOffsetOf(r)); err != nil {
			return err
		}
	}
	if !zero {
		return nil
	}
	z := make([]byte, min(int64(4<<20), g.RegionSize*max(1, (4<<20)/g.RegionSize)))
	total := g.VolumeSize()
	for off := int64(0); off < total; off += int64(len(z)) {
		n := min(int64(len(z)), total-off)
		if err := d.WriteAt(ctx, z[:n], g.DataOffset+off); err != nil {
			return err
		}
		if progress != nil {
			progress(Progress{Op: "format", Leg: fmt.Sprint(leg), Done: int64(leg)*total + off + n, Total: int64(legs) * total, Copied: off + n})
		}
	}
	return nil
}

// zeroChecksums is one region's checksum area for all-zero data.
func zeroChecksums(g Geometry) []byte {
	return regionChecksums(g, make([]byte, g.RegionSize))
}

// regionChecksums computes the checksum area of one region's data.
func regionChecksums(g Geometry, data []byte) []byte {
	out := make([]byte, g.ChecksumPerRegion)
	bs := g.BlockSize
	for i := 0; i*bs < len(data); i++ {
		putCsum(out, int64(i), crc32.Checksum(data[i*bs:(i+1)*bs], castagnoli))
	}
	return out
}
