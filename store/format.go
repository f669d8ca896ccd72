package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/shoal-ha/shoal/blockdev"
)

// FormatOptions shape a new store.
type FormatOptions struct {
	// Slots is the number of node slots (one journal each), 1..MaxSlots.
	Slots int
	// JournalBlocks is the size of each journal in blocks; 0 picks 1/64
	// of the device per slot, between 256 (1 MiB) and 8192 (32 MiB).
	JournalBlocks int
	// AGBlocks is the size of each allocation group in blocks; 0 picks
	// the largest (32512 blocks, 127 MiB) or, on a small device, a quarter
	// of the space after the journals.
	AGBlocks int
	// Label is a name for operators, at most 64 bytes.
	Label string
	// Align, in blocks, is where journals and allocation groups start
	// and what their sizes are multiples of: the mirror's region size, so
	// one node's journal shares no region (and no region lock) with
	// another's. 0 means 256 (1 MiB); 1 packs them.
	Align int
	// Overwrite allows formatting over an existing store.
	Overwrite bool
	// Now stamps the root directory; zero means time.Now.
	Now time.Time
}

// ErrStoreExists: Format found a store on the device and Overwrite was not
// set. Not retriable without Overwrite.
var ErrStoreExists = errors.New("store: device already holds a store")

// Layout computes the superblock Format would write on a device of
// size bytes.
func Layout(size int64, opts FormatOptions) (*Superblock, error) {
	if opts.Slots < 1 || opts.Slots > MaxSlots {
		return nil, fmt.Errorf("store format: Slots %d outside 1..%d", opts.Slots, MaxSlots)
	}
	if len(opts.Label) > maxLabel {
		return nil, fmt.Errorf("store format: Label of %d bytes (max %d)", len(opts.Label), maxLabel)
	}
	total := uint64(size / BlockSize)
	align := uint64(opts.Align)
	if align == 0 {
		align = 256
	}
	if align > maxAlign || align&(align-1) != 0 {
		return nil, fmt.Errorf("store format: Align %d is not a power of two up to %d", align, maxAlign)
	}
	up := func(n uint64) uint64 { return (n + align - 1) / align * align }
	jb := uint64(opts.JournalBlocks)
	if jb == 0 {
		jb = total / 64 / uint64(opts.Slots)
		jb = max(256, min(8192, jb))
		if jb*uint64(opts.Slots) > total/4 {
			jb = max(minJournalBlocks, total/4/uint64(opts.Slots))
		}
	}
	if jb < minJournalBlocks {
		return nil, fmt.Errorf("store format: JournalBlocks %d (at least %d)", jb, minJournalBlocks)
	}
	jb = up(jb)
	jstart := up(1)
	agStart := jstart + uint64(opts.Slots)*jb
	if agStart+minAGBlocks > total {
		return nil, fmt.Errorf("store format: a device of %d bytes is too small for %d journals of %d blocks", size, opts.Slots, jb)
	}
	rest := total - agStart
	agb := uint64(opts.AGBlocks)
	if agb == 0 {
		agb = maxAGBlocks / align * align
		if rest < 4*agb {
			agb = max(minAGBlocks, up(rest/4))
		}
	}
	if agb < minAGBlocks || agb > maxAGBlocks {
		return nil, fmt.Errorf("store format: AGBlocks %d outside %d..%d", agb, minAGBlocks, maxAGBlocks)
	}
	count := rest / agb
	blocks := agStart + count*agb
	if tail := rest % agb; tail >= minAGBlocks/4 {
		count++ // a shorter last group
		blocks += tail
	}
	if count == 0 {
		return nil, fmt.Errorf("store format: no room for an allocation group of %d blocks", agb)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	sb := &Superblock{UUID: uuid.New(), Blocks: blocks, Slots: uint32(opts.Slots), JournalStart: jstart,
		JournalBlocks: uint32(jb), AGStart: agStart, AGCount: uint32(count), AGBlocks: uint32(agb),
		Root: agStart + 1, Created: now.UnixNano(), Label: opts.Label}
	if err := sb.validate(); err != nil {
		return nil, err
	}
	return sb, nil
}

// Format lays a new, empty store on dev: superblock, one journal per slot,
// allocation groups and the root directory. The superblock is written
// last, so a format cut short leaves no store. ErrStoreExists when dev
// holds a store and opts.Overwrite is not set.
func Format(ctx context.Context, dev blockdev.Device, opts FormatOptions) (*Superblock, error) {
	if dev.BlockSize() <= 0 || BlockSize%dev.BlockSize() != 0 {
		return nil, fmt.Errorf("store format: device block size %d does not divide %d", dev.BlockSize(), BlockSize)
	}
	if _, err := ReadSuperblock(ctx, dev); err == nil && !opts.Overwrite {
		return nil, ErrStoreExists
	}
	sb, err := Layout(dev.Size(), opts)
	if err != nil {
		return nil, err
	}
	// Without a superblock the old store (if any) is gone first.
	if err := dev.WriteAt(ctx, make([]byte, BlockSize), 0); err != nil {
		return nil, err
	}
	if err := dev.Flush(ctx); err != nil {
		return nil, err
	}
	for slot := 0; slot < int(sb.Slots); slot++ {
		start := sb.journalStart(slot)
		// A random first sequence number: transactions an earlier store
		// left in this area never match what replay expects.
		h := journalHeader{TailPos: journalData, TailSeq: rand.Uint64N(1<<62) + 1}
		h.AppliedSeq = h.TailSeq - 1
		for v := uint64(0); v < 2; v++ {
			h.Version = v
			if err := dev.WriteAt(ctx, h.encode(start+v, slot), int64(start+v)*BlockSize); err != nil {
				return nil, err
			}
		}
	}
	for ag := 0; ag < int(sb.AGCount); ag++ {
		start, n := sb.agRange(ag)
		h := &agHeader{Free: n - 1, Bitmap: make([]byte, (n+7)/8)}
		bitSet(h.Bitmap, 0)
		if ag == 0 {
			bitSet(h.Bitmap, 1) // the root directory
			h.Free--
			h.NextGen = 1
		}
		if err := dev.WriteAt(ctx, h.encode(start), int64(start)*BlockSize); err != nil {
			return nil, err
		}
	}
	root := &inode{Ino: sb.Root, Gen: 1, Type: typeDir, Mode: 0o755, Nlink: 1, Mtime: sb.Created, Ctime: sb.Created,
		Parent: sb.Root, Buckets: make([]uint64, dirBuckets)}
	if err := dev.WriteAt(ctx, root.encode(), int64(sb.Root)*BlockSize); err != nil {
		return nil, err
	}
	if err := dev.Flush(ctx); err != nil {
		return nil, err
	}
	if err := dev.WriteAt(ctx, sb.encode(), 0); err != nil {
		return nil, err
	}
	if err := dev.Flush(ctx); err != nil {
		return nil, err
	}
	return sb, nil
}
