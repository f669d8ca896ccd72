package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/shoal-ha/shoal/blockdev"
)

// journalWriter appends this node's transactions to its slot's journal.
type journalWriter struct {
	s     *Store
	slot  int
	start uint64 // absolute block of the journal's block 0
	size  uint32 // journal blocks

	mu           sync.Mutex
	hdr          journalHeader // as last written
	head         uint32        // where the next transaction goes (before wrapping)
	nextSeq      uint64
	lastSeq      uint64
	pending      []Record  // records not acknowledged, in journal order
	pendingAt    []txPlace // the transaction that holds each, as pending
	pendingBytes int       // their size in a record stream
	// freed holds the blocks freed by transactions behind the journal's
	// tail no checkpoint has passed yet (reuseSafe).
	freed map[uint64]bool

	nextRec      atomic.Uint64
	checkpointed atomic.Uint64 // transactions up to here are in place and behind the tail
}

// txPlace is where a transaction is in the journal; known is false for
// one an earlier incarnation wrote (recoverOwn).
type txPlace struct {
	pos   uint32
	seq   uint64
	known bool
}

// dataWrite is file data that must reach the device before the
// transaction that points to it commits.
type dataWrite struct {
	blk uint64
	p   []byte
}

// fits says where a transaction of n blocks goes, if it fits.
func (j *journalWriter) fits(n uint32) (uint32, bool) {
	tail, head := j.hdr.TailPos, j.head
	if head >= tail {
		if head+n <= j.size {
			return head, true
		}
		if journalData+n < tail {
			return journalData, true
		}
		return 0, false
	}
	if head+n < tail {
		return head, true
	}
	return 0, false
}

// commit writes jt to the journal (assigning its sequence number), with
// data first, and makes it durable; its images go in place at the next
// checkpoint (deferInPlace). freed are the blocks jt frees. use is called
// right before the first write, to check the fencing of every lock the
// transaction writes under.
func (j *journalWriter) commit(ctx context.Context, dev blockdev.Device, jt *journalTx, data []dataWrite, freed map[uint64]bool, use func() error, recovery bool) (committed bool, err error) {
	if !j.mu.TryLock() {
		if recovery {
			// Reported: a commit of this node that writes under a lock
			// a dead node still holds keeps the writer until the end of
			// the recovery.
			done := j.s.noteWait("journal writer", fmt.Sprintf("journal of slot %d", j.slot), "another commit of this node is writing")
			j.mu.Lock()
			done()
		} else {
			j.mu.Lock()
		}
	}
	defer j.mu.Unlock()
	if n := dataBlocks(data); n > 0 && n <= journaledData {
		// Little data: it goes through the journal like metadata (one
		// flush instead of two); its blocks are new (copy on write), so
		// writing them again in a replay is harmless.
		for _, d := range data {
			for k := 0; k < len(d.p)/BlockSize; k++ {
				jt.Targets = append(jt.Targets, d.blk+uint64(k))
				jt.Images = append(jt.Images, d.p[k*BlockSize:(k+1)*BlockSize])
			}
		}
		data = nil
	}
	stream := recordStream(jt.Records, jt.Acks)
	n := uint32(txBlocks(len(jt.Images), len(stream)))
	// Room is kept after the transaction for the records a checkpoint
	// carries forward, so the next checkpoint always fits.
	carried := j.pendingBytes
	for _, r := range jt.Records {
		carried += recordSize(r)
	}
	c := uint32(0)
	if carried > 0 {
		c = uint32(txBlocks(0, carried))
	}
	if n+c > j.size-journalData-1 {
		return false, fmt.Errorf("%w: transaction of %d blocks (and %d for unacknowledged records), journal of %d", ErrJournalFull, n, c, j.size)
	}
	pos, ok := j.fits(n + c)
	if !ok {
		if err := j.checkpointLocked(ctx); err != nil {
			return false, err
		}
		if pos, ok = j.fits(n + c); !ok {
			return false, fmt.Errorf("%w: unacknowledged records leave no room for a transaction of %d blocks", ErrJournalFull, n)
		}
	}
	if !j.reuseSafe(data) {
		if err := j.checkpointLocked(ctx); err != nil {
			return false, err
		}
		if pos, ok = j.fits(n + c); !ok {
			return false, fmt.Errorf("%w: unacknowledged records leave no room for a transaction of %d blocks", ErrJournalFull, n)
		}
	}
	jt.Seq, jt.Pos = j.nextSeq, pos
	buf, err := encodeTx(jt, j.start, j.slot)
	if err != nil {
		return false, err
	}
	if err := j.s.slotLock.use(); err != nil {
		return false, err
	}
	if use != nil {
		if err := use(); err != nil {
			return false, err
		}
	}
	s := j.s
	if len(data) > 0 {
		// Data blocks are new (copy on write): a cut here leaves nothing
		// that points to them.
		for _, d := range data {
			if err := s.writeOn(ctx, dev, d.blk, d.p); err != nil {
				return false, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return false, context.Cause(ctx)
	}
	// From the journal write on the caller's context no longer cuts the
	// commit short: a cut between the commit record and the in-place
	// writes would leave a transaction durable but its blocks not in
	// place. The store's own bound applies instead.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CommitWriteTimeout)
	defer cancel()
	if len(data) > 0 {
		if err := s.writeOn(wctx, dev, j.start+uint64(pos), buf[:len(buf)-BlockSize]); err != nil {
			return false, err
		}
		if err := dev.Flush(wctx); err != nil {
			return false, fmt.Errorf("store: flushing data before commit: %w", err)
		}
		if err := s.writeOn(wctx, dev, j.start+uint64(pos)+uint64(n-1), buf[len(buf)-BlockSize:]); err != nil {
			return false, err
		}
	} else if err := s.writeOn(wctx, dev, j.start+uint64(pos), buf); err != nil {
		return false, err
	}
	if err := dev.Flush(wctx); err != nil {
		return false, fmt.Errorf("store: flushing commit: %w", err)
	}
	// Committed: from here on the transaction survives a crash.
	j.head = pos + n
	j.lastSeq = jt.Seq
	j.nextSeq++
	s.stats.commits.Add(1)
	j.addPending(jt.Records, jt.Acks, txPlace{pos: pos, seq: jt.Seq, known: true})
	s.deferInPlace(wctx, dev, jt)
	if len(freed) > 0 {
		if j.freed == nil {
			j.freed = map[uint64]bool{}
		}
		for b := range freed {
			j.freed[b] = true
		}
		if len(j.freed) > maxFreedKept {
			// Remembering fewer is cheaper than remembering all; a
			// failure leaves them for the next checkpoint.
			if err := j.checkpointLocked(wctx); err != nil {
				s.log.Warn("checkpoint after many frees failed; the next one will try again", "error", err)
			}
		}
	}
	return true, nil
}

// maxFreedKept is how many freed blocks the journal writer remembers
// (reuseSafe) before a commit checkpoints to forget them.
const maxFreedKept = 1 << 16

// reuseSafe says whether the data blocks written in place before their
// commit (not through the journal) may be written now: not when one was
// freed by a transaction that no checkpoint has passed. Such a block may
// have an older image in this journal (an inode, a directory block, a
// small file's data that went through the journal), which a replay would
// write over the new data (ext3's and JBD2's revoke records answer the
// same question), and which a checkpoint would too while the image is kept
// in memory (deferInPlace). A checkpoint first puts every such image in
// place and moves the tail past it. Another node reuses a block only after
// the allocation group's lock came to it, which checkpoints this journal
// first (glock.writeBack), or after this node's recovery replayed it.
func (j *journalWriter) reuseSafe(data []dataWrite) bool {
	if len(j.freed) == 0 {
		return true
	}
	for _, d := range data {
		for k := 0; k < len(d.p)/BlockSize; k++ {
			if j.freed[d.blk+uint64(k)] {
				return false
			}
		}
	}
	return true
}

// inPlaceWriters bounds the in-place writes of one batch in flight at
// once.
const inPlaceWriters = 8

// maxDeferred is how many committed images (blocks) a node keeps in memory
// before a commit writes them in place itself instead of leaving them to
// the next checkpoint: 16 MiB. Journals of the usual size (the demo's 1
// MiB, 256 blocks) never reach it: their checkpoint comes first.
const maxDeferred = 4096

// deferInPlace keeps the images of jt, a transaction just committed, in
// memory (unwritten) for the next checkpoint to write in place, as a
// journaling file system's checkpoint does (JBD2's, GFS2's log flush):
// the commit waits for the journal write only, and a block that many
// transactions change (a directory, an allocation group's header) is
// written in place once per checkpoint instead of once per commit. Until
// then this node's reads see the images from memory (Store.readAt), and a
// lock whose blocks are among them is handed on only after a checkpoint
// (glock.writeBack); a crash leaves them to the journal's replay. Past
// maxDeferred images the commit writes them all in place at once.
func (s *Store) deferInPlace(ctx context.Context, dev blockdev.Device, jt *journalTx) {
	for i, t := range jt.Targets {
		s.unwritten.add(t, jt.Images[i], dev)
	}
	if s.unwritten.n.Load() > maxDeferred {
		if err := s.writeUnwritten(ctx); err != nil {
			s.log.Error("committed images not written in place; they are kept for the next checkpoint", "seq", jt.Seq, "error", err)
		}
	}
}

// imageRun is a run of contiguous blocks written as one, and how its
// write ended.
type imageRun struct {
	start uint64
	n     int
	err   error
}

// writeImages writes image(t) for every block t of blocks (sorted, each
// once) through dev: contiguous blocks as one write, the runs at once (up
// to inPlaceWriters). The caller's order of the images does not matter
// (the journal holds them, or, in a replay, each block's last image is
// the one written). It returns the runs with their errors.
func (s *Store) writeImages(ctx context.Context, dev blockdev.Device, blocks []uint64, image func(uint64) []byte) []*imageRun {
	var runs []*imageRun
	for _, t := range blocks {
		if k := len(runs) - 1; k >= 0 && runs[k].start+uint64(runs[k].n) == t {
			runs[k].n++
			continue
		}
		runs = append(runs, &imageRun{start: t, n: 1})
	}
	write := func(r *imageRun) {
		p := image(r.start)
		if r.n > 1 {
			p = make([]byte, 0, r.n*BlockSize)
			for k := 0; k < r.n; k++ {
				p = append(p, image(r.start+uint64(k))...)
			}
		}
		r.err = s.writeOn(ctx, dev, r.start, p)
	}
	if len(runs) == 1 {
		write(runs[0])
		return runs
	}
	sem := make(chan struct{}, inPlaceWriters)
	var wg sync.WaitGroup
	for _, r := range runs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			write(r)
		}()
	}
	wg.Wait()
	return runs
}

// checkpoint makes every committed transaction's in-place writes durable
// and moves the journal's tail past them, carrying unacknowledged records
// forward. After it, a replay of this journal writes nothing in place.
func (s *Store) checkpoint(ctx context.Context) error {
	if s.jr == nil {
		return nil
	}
	s.jr.mu.Lock()
	defer s.jr.mu.Unlock()
	return s.jr.checkpointLocked(ctx)
}

func (j *journalWriter) checkpointLocked(ctx context.Context) error {
	s := j.s
	if j.checkpointed.Load() == j.lastSeq && j.hdr.SealSeq == 0 && j.hdr.AppliedSeq == j.lastSeq && s.unwritten.n.Load() == 0 {
		return nil // nothing new since the last checkpoint
	}
	if err := s.slotLock.use(); err != nil {
		return err
	}
	if err := s.writeUnwritten(ctx); err != nil {
		return err
	}
	if err := s.dev.Flush(ctx); err != nil {
		return fmt.Errorf("store: flushing for checkpoint: %w", err)
	}
	h := j.hdr
	h.Version++
	h.SealSeq, h.Handled = 0, 0
	if len(j.pending) == 0 {
		h.TailPos, h.TailSeq = journalData, j.nextSeq
		j.head = journalData
	} else if at, ok := j.keptTail(); ok {
		// The tail stays at the oldest transaction holding a record not
		// yet acknowledged: a replay hands its records over from there
		// and skips the images up to AppliedSeq, which are in place. No
		// carry then: one journal write and flush fewer for a checkpoint
		// (and so for every lock hand-over) made while requests are in
		// flight.
		h.TailPos, h.TailSeq = at.pos, at.seq
	} else {
		// Carry the records forward in a transaction of their own, then
		// point the tail at it. A crash before the header write leaves
		// both copies in the journal; replay counts each record once.
		carry := &journalTx{Records: append([]Record(nil), j.pending...)}
		stream := recordStream(carry.Records, nil)
		n := uint32(txBlocks(0, len(stream)))
		pos, ok := j.fits(n)
		if !ok {
			return fmt.Errorf("%w: %d unacknowledged records (%d blocks) do not fit", ErrJournalFull, len(j.pending), n)
		}
		carry.Seq, carry.Pos = j.nextSeq, pos
		buf, err := encodeTx(carry, j.start, j.slot)
		if err != nil {
			return err
		}
		if err := s.writeBlocks(ctx, j.start+uint64(pos), buf); err != nil {
			return err
		}
		if err := s.dev.Flush(ctx); err != nil {
			return err
		}
		j.nextSeq++
		j.lastSeq = carry.Seq
		j.head = pos + n
		h.TailPos, h.TailSeq = pos, carry.Seq
		for i := range j.pendingAt {
			j.pendingAt[i] = txPlace{pos: pos, seq: carry.Seq, known: true}
		}
	}
	h.AppliedSeq = j.lastSeq
	h.NextRecord = j.nextRec.Load()
	if err := j.writeHeader(ctx, &h); err != nil {
		return err
	}
	j.checkpointed.Store(j.lastSeq)
	j.freed = nil
	s.stats.checkpoints.Add(1)
	return nil
}

// writeHeader writes h (whose Version is already the new one) to the copy
// its Version selects and makes it durable.
func (j *journalWriter) writeHeader(ctx context.Context, h *journalHeader) error {
	blk := j.start + h.Version%2
	if err := j.s.writeBlocks(ctx, blk, h.encode(blk, j.slot)); err != nil {
		return err
	}
	if err := j.s.dev.Flush(ctx); err != nil {
		return fmt.Errorf("store: flushing journal header: %w", err)
	}
	j.hdr = *h
	return nil
}

func recordSize(r Record) int { return 1 + 8 + 1 + len(r.Kind) + 4 + len(r.Payload) }

// keptTail is where a checkpoint may leave the journal's tail instead of
// carrying the pending records forward: the transaction holding the
// oldest of them, when every one's place is known and the journal from
// there to the head takes at most half of it (so that the commits after
// the checkpoint still fit, and a replay reads little).
func (j *journalWriter) keptTail() (txPlace, bool) {
	if len(j.pendingAt) == 0 {
		return txPlace{}, false
	}
	at := j.pendingAt[0]
	for _, p := range j.pendingAt {
		if !p.known {
			return txPlace{}, false
		}
		if p.seq < at.seq {
			at = p
		}
	}
	used := j.head - at.pos
	if j.head < at.pos {
		used = j.size - at.pos + j.head - journalData
	}
	return at, used <= (j.size-journalData)/2
}

// addPending notes committed records and acknowledgements; at is the
// transaction that holds recs.
func (j *journalWriter) addPending(recs []Record, acks []uint64, at txPlace) {
	j.pending = append(j.pending, recs...)
	for range recs {
		j.pendingAt = append(j.pendingAt, at)
	}
	if len(acks) > 0 {
		acked := map[uint64]bool{}
		for _, a := range acks {
			acked[a] = true
		}
		kept, keptAt := j.pending[:0], j.pendingAt[:0]
		for i, r := range j.pending {
			if !acked[r.ID] {
				kept = append(kept, r)
				keptAt = append(keptAt, j.pendingAt[i])
			}
		}
		j.pending, j.pendingAt = kept, keptAt
	}
	j.pendingBytes = 0
	for _, r := range j.pending {
		j.pendingBytes += recordSize(r)
	}
}

// setOwner writes owner into the journal header (when it differs).
func (j *journalWriter) setOwner(ctx context.Context, owner string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.hdr.Owner == owner {
		return nil
	}
	if err := j.s.slotLock.use(); err != nil {
		return err
	}
	h := j.hdr
	h.Version++
	h.Owner = owner
	return j.writeHeader(ctx, &h)
}

// journaledData is how many data blocks a transaction may carry in the
// journal instead of writing and flushing them before its commit.
const journaledData = 16

func dataBlocks(data []dataWrite) int {
	n := 0
	for _, d := range data {
		n += len(d.p) / BlockSize
	}
	return n
}
