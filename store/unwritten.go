package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/shoal-ha/shoal/blockdev"
)

// unwritten holds the images of committed transactions that are not in
// place on the device yet: those a commit leaves to the next checkpoint
// (deferInPlace), and those whose write in place failed. The journal
// keeps them, so a replay would put them in place; until this node
// writes them they are what the blocks hold for this node: every read of
// the device goes through them (Store.readAt), a checkpoint writes them
// first and does not move the journal's tail past them while one fails,
// and so the lock that guards them is not handed on (glock.writeBack)
// until they are in place. Changed under the journal writer's mutex;
// read by any reader.
type unwritten struct {
	n atomic.Int64 // len(blocks), read without mu
	// ver grows whenever an image leaves (it is in place): a device read
	// begun before may predate that write. An image added or replaced
	// needs no new version: the overlay gives the newest image anyway.
	ver atomic.Uint64

	mu     sync.RWMutex
	blocks map[uint64]unwrittenBlock
}

type unwrittenBlock struct {
	img []byte          // BlockSize; never written into
	dev blockdev.Device // the device the commit wrote through
}

// add keeps img as block blk's committed image, replacing an older one.
func (u *unwritten) add(blk uint64, img []byte, dev blockdev.Device) {
	u.mu.Lock()
	if u.blocks == nil {
		u.blocks = map[uint64]unwrittenBlock{}
	}
	u.blocks[blk] = unwrittenBlock{img, dev}
	u.n.Store(int64(len(u.blocks)))
	u.mu.Unlock()
}

// written notes that the kept image of blk, img, is in place; a newer
// image kept since stays.
func (u *unwritten) written(blk uint64, img []byte) {
	if u.n.Load() == 0 {
		return
	}
	u.mu.Lock()
	if b, ok := u.blocks[blk]; ok && &b.img[0] == &img[0] {
		delete(u.blocks, blk)
		u.n.Store(int64(len(u.blocks)))
		u.ver.Add(1)
	}
	u.mu.Unlock()
}

// overlay copies the kept images of the blocks within p (read from the
// device at byte offset off) over p. It reports false when the set changed
// since version v: the device read may predate a write, read again.
func (u *unwritten) overlay(p []byte, off int64, v uint64) bool {
	if u.n.Load() == 0 {
		return u.ver.Load() == v
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.ver.Load() != v {
		return false
	}
	first := uint64(off) / BlockSize
	last := (uint64(off) + uint64(len(p)) - 1) / BlockSize
	put := func(blk uint64, b unwrittenBlock) {
		// The overlap of block blk with [off, off+len(p)).
		bs := int64(blk) * BlockSize
		from, to := max(bs, off), min(bs+BlockSize, off+int64(len(p)))
		copy(p[from-off:to-off], b.img[from-bs:to-bs])
	}
	if last-first < uint64(len(u.blocks)) {
		for blk := first; blk <= last; blk++ {
			if b, ok := u.blocks[blk]; ok {
				put(blk, b)
			}
		}
		return true
	}
	for blk, b := range u.blocks {
		if blk >= first && blk <= last {
			put(blk, b)
		}
	}
	return true
}

// byDevice is a copy of the kept images, grouped by the device they are
// written through, each group's blocks sorted.
func (u *unwritten) byDevice() (map[uint64]unwrittenBlock, map[blockdev.Device][]uint64) {
	u.mu.RLock()
	kept := maps.Clone(u.blocks)
	u.mu.RUnlock()
	byDev := map[blockdev.Device][]uint64{}
	for blk, b := range kept {
		byDev[b.dev] = append(byDev[b.dev], blk)
	}
	for _, blks := range byDev {
		slices.Sort(blks)
	}
	return kept, byDev
}

// readAt reads p at byte offset off from the device as this node must see
// it: with the committed images not yet in place over it.
func (s *Store) readAt(ctx context.Context, p []byte, off int64) error {
	for {
		v := s.unwritten.ver.Load()
		if err := s.dev.ReadAt(ctx, p, off); err != nil {
			return err
		}
		if s.unwritten.overlay(p, off, v) {
			return nil
		}
	}
}

// writeUnwritten writes the committed images kept in memory in place
// (within CommitWriteTimeout; contiguous blocks as one write, runs at
// once: writeImages), under the journal writer's mutex, before a
// checkpoint moves the tail past their transactions. It does not flush.
// The images that fail stay kept and the error (ErrUnwritten) stops the
// checkpoint: retrying is safe.
func (s *Store) writeUnwritten(ctx context.Context) error {
	if s.unwritten.n.Load() == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.CommitWriteTimeout)
	defer cancel()
	// Runs are written through one device; kept images of another (the
	// recovery's, whose writes carry its grants) go in a batch of their
	// own.
	kept, byDev := s.unwritten.byDevice()
	var failed, first uint64
	var ferr error
	for dev, blks := range byDev {
		for _, r := range s.writeImages(wctx, dev, blks, func(t uint64) []byte { return kept[t].img }) {
			for k := 0; k < r.n; k++ {
				t := r.start + uint64(k)
				if r.err == nil {
					s.unwritten.written(t, kept[t].img)
					continue
				}
				if ferr == nil || t < first {
					first = t
				}
				failed++
				ferr = r.err
			}
		}
	}
	if ferr != nil {
		return fmt.Errorf("%w: %d blocks (first %d): %w", ErrUnwritten, failed, first, ferr)
	}
	return nil
}
