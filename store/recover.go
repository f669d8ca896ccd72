package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// ReplayStats says what a replay did.
type ReplayStats struct {
	// Slot is the slot replayed.
	Slot int
	// Transactions is how many committed transactions the journal held.
	Transactions int
	// Applied is how many of them had images still to write in place.
	Applied int
	// Blocks is how many metadata blocks were written in place.
	Blocks int
	// Records is how many application records were handed to handlers.
	Records int
	// Duration is the wall time of the replay.
	Duration time.Duration
	// ByOpen says the slot is this store's own and its Open replayed it:
	// the owner asked for was the incarnation before (ReplayOwner).
	ByOpen bool
}

// ErrNoHandler: recovery found an unacknowledged record of a kind no
// handler is registered for. Nothing after it was handled; register a
// handler and run the recovery again (safe: handled records are not
// handed over twice).
var ErrNoHandler = errors.New("store: no handler for record kind")

// readJournalHeader reads the newer valid copy of slot's journal header.
func (s *Store) readJournalHeader(ctx context.Context, slot int) (*journalHeader, error) {
	start := s.sb.journalStart(slot)
	var hs [2]*journalHeader
	var errs [2]error
	for i := 0; i < 2; i++ {
		b, err := s.readBlock(ctx, start+uint64(i))
		if err != nil {
			return nil, err
		}
		hs[i], errs[i] = decodeJournalHeader(b, start+uint64(i))
	}
	h, _ := pickHeader(hs[0], hs[1])
	if h == nil {
		return nil, fmt.Errorf("journal of slot %d: both header copies unreadable: %w; %w", slot, errs[0], errs[1])
	}
	return h, nil
}

// readTxAt reads the transaction at journal position pos if it is intact
// and has sequence number seq.
func (s *Store) readTxAt(ctx context.Context, slot int, pos uint32, seq uint64) (*journalTx, uint32, bool, error) {
	start, size := s.sb.journalStart(slot), s.sb.JournalBlocks
	if pos < journalData || pos >= size {
		return nil, 0, false, nil
	}
	desc, err := s.readBlock(ctx, start+uint64(pos))
	if err != nil {
		return nil, 0, false, err
	}
	dseq, targets, nrec, err := decodeDesc(desc, start+uint64(pos))
	if err != nil || dseq != seq {
		return nil, 0, false, nil
	}
	n := uint32(2 + len(targets) + nrec)
	if pos+n > size {
		return nil, 0, false, nil
	}
	rest := make([]byte, int(n-1)*BlockSize)
	if err := s.dev.ReadAt(ctx, rest, int64(start+uint64(pos)+1)*BlockSize); err != nil {
		return nil, 0, false, fmt.Errorf("store: reading journal of slot %d: %w", slot, err)
	}
	tx, err := decodeTxBody(desc, rest, start, pos, slot)
	if err != nil {
		return nil, 0, false, nil // torn: the journal ends before it
	}
	return tx, pos + n, true, nil
}

// scanJournal reads slot's journal from its tail and feeds a ReplayPlan.
// It returns the transactions, the plan and where the next one would go.
func (s *Store) scanJournal(ctx context.Context, slot int, hdr *journalHeader) ([]*journalTx, *ReplayPlan, uint32, error) {
	return s.scanJournalUntil(ctx, slot, hdr, nil)
}

// scanJournalUntil is scanJournal stopping after the first transaction
// for which stop (when not nil) is true.
func (s *Store) scanJournalUntil(ctx context.Context, slot int, hdr *journalHeader, stop func(*journalTx) bool) ([]*journalTx, *ReplayPlan, uint32, error) {
	plan := newReplayPlan(*hdr)
	var txs []*journalTx
	pos := hdr.TailPos
	for len(txs) <= int(s.sb.JournalBlocks) {
		tx, next, ok, err := s.readTxAt(ctx, slot, pos, plan.Expect())
		if err != nil {
			return nil, nil, 0, err
		}
		if !ok && pos != journalData {
			tx, next, ok, err = s.readTxAt(ctx, slot, journalData, plan.Expect())
			if err != nil {
				return nil, nil, 0, err
			}
		}
		if !ok {
			break
		}
		plan.Feed(tx)
		txs = append(txs, tx)
		pos = next
		if stop != nil && stop(tx) {
			break
		}
	}
	return txs, plan, pos, nil
}

// ReplaySlot recovers the journal of slot, whose node died: under a
// recovery lock on the slot it writes the committed transactions in
// place, then hands the slot's unacknowledged application records to
// their handlers (Handle), in journal order, each in a transaction of
// this node's slot that also advances the dead slot's replay cursor, and
// finally empties the dead journal. Replay is idempotent: run again (also
// after this node died part way) it changes nothing more. It waits
// (within ctx) while a live node has the slot open.
func (s *Store) ReplaySlot(ctx context.Context, slot int) (ReplayStats, error) {
	return s.replaySlot(ctx, slot, "")
}

// replaySlot is ReplaySlot; with owner set (ReplayOwner), a slot whose
// lock a live node holds is left alone once its journal header names
// another owner: the dead owner's node came back and its new
// incarnation's Open recovered the slot (acquireSlot) and keeps it.
func (s *Store) replaySlot(ctx context.Context, slot int, owner string) (ReplayStats, error) {
	if err := s.alive(); err != nil {
		return ReplayStats{}, err
	}
	if slot < 0 || slot >= int(s.sb.Slots) {
		return ReplayStats{}, fmt.Errorf("store: replay of slot %d, the store has %d slots", slot, s.sb.Slots)
	}
	if slot == s.slot {
		return ReplayStats{}, fmt.Errorf("store: replay of slot %d, which this node has open", slot)
	}
	if s.readOnly {
		return ReplayStats{}, ErrReadOnly
	}
	end := s.beginRecovery()
	defer end()
	defer s.setPhase(slot, "")
	s.setPhase(slot, "taking the store's replay lock")
	release, err := s.takeReplayLock(ctx)
	if err != nil {
		return ReplayStats{}, err
	}
	defer release()
	s.setPhase(slot, "taking the slot's recovery lock")
	g := s.glockFor(classSlot, uint64(slot))
	if owner == "" {
		if err := g.acquire(ctx, Exclusive, false, true); err != nil {
			return ReplayStats{}, err
		}
	} else {
		for {
			err := g.acquire(ctx, Exclusive, true, true)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrWouldBlock) {
				return ReplayStats{}, err
			}
			h, err := s.readJournalHeader(ctx, slot)
			if err != nil {
				return ReplayStats{}, err
			}
			if h.Owner != owner {
				s.log.Info("a dead incarnation's slot was recovered by the incarnation that opened it since", "slot", slot, "dead", owner, "owner", h.Owner)
				return ReplayStats{Slot: slot}, nil
			}
			s.setPhase(slot, "taking the slot's recovery lock (held by a live node, which may be recovering it)")
			select {
			case <-s.clk.After(s.cfg.OrphanCheck):
			case <-ctx.Done():
				return ReplayStats{}, ctx.Err()
			}
		}
	}
	defer g.put(Exclusive, true)
	if owner != "" {
		// Read again under the lock: the slot's new incarnation may have
		// recovered it and closed again since the look above.
		h, err := s.readJournalHeader(ctx, slot)
		if err != nil {
			return ReplayStats{}, err
		}
		if h.Owner != owner {
			return ReplayStats{Slot: slot}, nil
		}
	}
	if err := s.placeDeadSlots(ctx, slot); err != nil {
		return ReplayStats{}, err
	}
	return s.recoverSlot(ctx, slot, false, true)
}

// takeReplayLock takes the store's replay lock, a recovery grant (over a
// dead holder's orphan): whoever hands a dead slot's records over, under
// recovery locks granted over the dead nodes' orphans, holds it, and puts
// every dead slot's committed images in place first (placeDeadSlots).
// Without it two recoveries at once (a coordinator's ReplaySlot and a
// node's Open recovering its own slot, see acquireSlot) could each take a
// block over an orphan while the other had yet to write a dead slot's
// older image of it in place, which would then undo the change.
func (s *Store) takeReplayLock(ctx context.Context) (release func(), err error) {
	g := s.glockFor(classReplay, 0)
	if err := g.acquire(ctx, Exclusive, false, true); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := g.put(Exclusive, true); err != nil {
				s.log.Warn("giving the store's replay lock back", "error", err)
			}
		})
	}, nil
}

// placeDeadSlots writes the committed images of every dead slot but
// except and this node's own in place (a slot whose lock no live node
// holds: its recovery lock is granted at once), leaving their records to
// their own replays. A coordinator that died during a replay left the
// replay cursor (and its handlers' changes, under locks that are orphans
// now) in its own journal; a dead node's blocks are under its orphans,
// which recovery requests are granted over. Their images go in place
// before records are handed over under recovery locks. A slot a live node
// holds was put in place by that node's Open, which did it under the
// replay lock (see takeReplayLock). The caller holds the replay lock.
func (s *Store) placeDeadSlots(ctx context.Context, except int) error {
	for other := 0; other < int(s.sb.Slots); other++ {
		if other == except || other == s.slot {
			continue
		}
		// A slot with nothing to write in place is left without asking
		// for its lock (two lock-manager requests saved per slot, on
		// every replay): read unlocked, its journal cannot gain a
		// transaction that matters here, since a dead node's is fenced,
		// an unused one is written by nobody, and a live node's is
		// skipped anyway.
		if dirty, err := s.journalDirty(ctx, other); err != nil {
			return err
		} else if !dirty {
			continue
		}
		og := s.glockFor(classSlot, uint64(other))
		if err := og.acquire(ctx, Exclusive, true, true); err != nil {
			if errors.Is(err, ErrWouldBlock) {
				continue // a live node has it open
			}
			return err
		}
		s.setPhase(except, "replaying dead slot %d first", other)
		_, err := s.recoverSlot(ctx, other, false, false)
		if perr := og.put(Exclusive, true); err == nil {
			err = perr
		}
		if err != nil {
			return fmt.Errorf("store: replaying dead slot %d before slot %d: %w", other, except, err)
		}
	}
	return nil
}

// journalDirty reports whether slot's journal holds a committed
// transaction not yet written in place (after its AppliedSeq).
func (s *Store) journalDirty(ctx context.Context, slot int) (bool, error) {
	h, err := s.readJournalHeader(ctx, slot)
	if err != nil {
		return false, err
	}
	// The scan stops at the first such transaction: a live node's journal
	// (skipped once its lock says so) is read no further than that.
	dirty := func(tx *journalTx) bool { return tx.Seq > h.AppliedSeq }
	txs, _, _, err := s.scanJournalUntil(ctx, slot, h, dirty)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(txs, dirty), nil
}

// recoverSlot replays slot's journal. own: the slot is this node's (Open
// after a crash); the journal writer is set up from what is found.
// records: hand the records over too (else only the images go in place and
// the header says so).
func (s *Store) recoverSlot(ctx context.Context, slot int, own, records bool) (ReplayStats, error) {
	t0 := time.Now()
	st := ReplayStats{Slot: slot}
	g := s.glockFor(classSlot, uint64(slot))
	if !own {
		s.setPhase(slot, "reading the dead slot's journal")
	}
	hdr, err := s.readJournalHeader(ctx, slot)
	if err != nil {
		return st, err
	}
	txs, plan, head, err := s.scanJournal(ctx, slot, hdr)
	if err != nil {
		return st, err
	}
	st.Transactions = len(txs)
	dev := s.rdev // a dead slot's blocks are under its orphaned locks
	if own {
		dev = s.dev
	}
	if len(txs) > 0 {
		if err := g.use(); err != nil {
			return st, err
		}
	}
	if !own {
		s.setPhase(slot, "writing %d committed transactions of the dead slot in place", len(txs))
		defer s.setPhase(slot, "")
	}
	// Each block's last committed image is what the replay leaves in
	// place, so only that one is written, and the blocks go out together
	// (writeImages) rather than one after another: the replay is in the
	// path of every request the dead node held. Until the flush below and
	// the header that says so, a replay cut short anywhere here is simply
	// done again.
	images := map[uint64][]byte{}
	for _, tx := range txs {
		if tx.Seq <= hdr.AppliedSeq {
			continue
		}
		st.Applied++
		for i, t := range tx.Targets {
			if t < s.sb.AGStart && !(t >= s.sb.JournalStart && t < s.sb.AGStart) || t >= s.sb.Blocks {
				return st, fmt.Errorf("%w: journal of slot %d transaction %d writes block %d outside the store", ErrCorrupt, slot, tx.Seq, t)
			}
			images[t] = tx.Images[i]
		}
	}
	for _, r := range s.writeImages(ctx, dev, slices.Sorted(maps.Keys(images)), func(t uint64) []byte { return images[t] }) {
		if r.err != nil {
			return st, r.err
		}
		st.Blocks += r.n
	}
	if st.Applied > 0 {
		if err := dev.Flush(ctx); err != nil {
			return st, err
		}
	}
	rescan := false
	for t := range images {
		j := s.sb.journalStart(slot)
		rescan = rescan || t >= j && t < j+uint64(s.sb.JournalBlocks)
	}
	if rescan {
		// Images carried a newer header of this very journal (a dead
		// recovery's cursor): read it again. Otherwise the journal is as
		// read above (its node is fenced and the slot's lock is held),
		// and the scan is not done twice.
		if hdr, err = s.readJournalHeader(ctx, slot); err != nil {
			return st, err
		}
		if txs, plan, head, err = s.scanJournal(ctx, slot, hdr); err != nil {
			return st, err
		}
	}
	last := plan.LastSeq()
	pending := plan.Pending()
	if own {
		return s.recoverOwn(ctx, st, t0, hdr, plan, head, pending)
	}
	if len(txs) == 0 {
		st.Duration = time.Since(t0)
		return st, nil
	}
	cur := *hdr
	if cur.AppliedSeq != last || cur.SealSeq == 0 {
		// The images are in place: a second replay must not write them
		// again over what handlers and other nodes change next.
		cur.Version++
		cur.AppliedSeq = last
		if cur.SealSeq == 0 {
			cur.SealSeq, cur.Handled = last, 0
		}
		if err := s.writeHeaderOf(ctx, g, slot, &cur); err != nil {
			return st, err
		}
	}
	if !records {
		st.Duration = time.Since(t0)
		return st, nil
	}
	// Records go to their handlers several to a transaction (one journal
	// commit for the batch, with the cursor that says they are handled):
	// a dead web node leaves a record per request in flight, and each
	// commit is a journal write and flush on every leg. A batch that does
	// not fit in the journal is halved (Config.ReplayBatch).
	// The last batch also empties the dead journal, in its transaction:
	// one commit fewer in the path of the dead node's requests, and the
	// records' effects and the emptied journal become durable together.
	emptied := func(h journalHeader) journalHeader {
		e := journalHeader{Version: h.Version + 1, TailPos: head, TailSeq: last + 1, AppliedSeq: last, NextRecord: plan.NextRecord(), Owner: h.Owner}
		if e.TailPos >= s.sb.JournalBlocks {
			e.TailPos = journalData
		}
		return e
	}
	batch := s.cfg.ReplayBatch
	for i := 0; i < len(pending); {
		n := min(batch, len(pending)-i)
		recs := pending[i : i+n]
		for _, rec := range recs {
			if s.handler(rec.Kind) == nil {
				return st, fmt.Errorf("%w %q (record %d of slot %d)", ErrNoHandler, rec.Kind, rec.ID, slot)
			}
		}
		s.setPhase(slot, "handling records %d-%d of %d (ids %d-%d)", i+1, i+n, len(pending), recs[0].ID, recs[n-1].ID)
		next := cur
		next.Version++
		next.Handled += uint64(n)
		if i+n == len(pending) {
			next = emptied(cur)
		}
		err := s.run(ctx, true, func(tx *Tx) error {
			tx.external[g] = true
			for _, rec := range recs {
				if err := s.handler(rec.Kind)(ctx, tx, rec); err != nil {
					return fmt.Errorf("record %d (%s): %w", rec.ID, rec.Kind, err)
				}
			}
			blk := s.sb.journalStart(slot) + next.Version%2
			return tx.write(g, blk, next.encode(blk, slot))
		})
		if errors.Is(err, ErrJournalFull) && n > 1 {
			batch = n / 2
			continue
		}
		if err != nil {
			return st, fmt.Errorf("store: handling records %d-%d of slot %d: %w", recs[0].ID, recs[n-1].ID, slot, err)
		}
		cur = next
		st.Records += n
		i += n
	}
	if len(pending) > 0 {
		st.Duration = time.Since(t0)
		return st, nil
	}
	s.setPhase(slot, "emptying the dead slot's journal")
	final := emptied(cur)
	err = s.run(ctx, true, func(tx *Tx) error {
		tx.external[g] = true
		blk := s.sb.journalStart(slot) + final.Version%2
		return tx.write(g, blk, final.encode(blk, slot))
	})
	if err != nil {
		return st, err
	}
	st.Duration = time.Since(t0)
	return st, nil
}

// recoverOwn finishes the replay of this node's own slot at Open: the
// journal writer starts where the old incarnation stopped, a checkpoint
// moves the tail past its transactions (carrying its unhandled records),
// and each record goes to its handler in a transaction that acknowledges
// it.
func (s *Store) recoverOwn(ctx context.Context, st ReplayStats, t0 time.Time, hdr *journalHeader, plan *ReplayPlan, head uint32, pending []Record) (ReplayStats, error) {
	j := s.jr
	last := plan.LastSeq()
	j.mu.Lock()
	j.hdr, j.head, j.nextSeq, j.lastSeq = *hdr, head, last+1, last
	j.nextRec.Store(plan.NextRecord())
	j.pending, j.pendingAt = nil, nil
	j.addPending(pending, nil, txPlace{}) // places unknown: the checkpoint carries them
	if st.Transactions == 0 && hdr.SealSeq == 0 {
		j.checkpointed.Store(last)
		j.mu.Unlock()
		st.Duration = time.Since(t0)
		return st, nil
	}
	j.checkpointed.Store(0) // force the checkpoint
	err := j.checkpointLocked(ctx)
	j.mu.Unlock()
	if err != nil {
		return st, err
	}
	for _, rec := range pending {
		h := s.handler(rec.Kind)
		if h == nil {
			return st, fmt.Errorf("%w %q (record %d of slot %d)", ErrNoHandler, rec.Kind, rec.ID, s.slot)
		}
		// Under recovery locks when the dead incarnation's locks are
		// still orphans: they are released only after its recovery's
		// replay step, which waits for this Open (acquireSlot).
		err := s.run(ctx, s.ownOrphan, func(tx *Tx) error {
			if err := h(ctx, tx, rec); err != nil {
				return err
			}
			tx.Ack(rec.ID)
			return nil
		})
		if err != nil {
			return st, fmt.Errorf("store: handling record %d (%s) of own slot %d: %w", rec.ID, rec.Kind, s.slot, err)
		}
		st.Records++
	}
	st.Duration = time.Since(t0)
	return st, nil
}

// writeHeaderOf writes slot's journal header h in place (durably), under
// g, the slot's lock.
func (s *Store) writeHeaderOf(ctx context.Context, g *glock, slot int, h *journalHeader) error {
	if err := g.use(); err != nil {
		return err
	}
	blk := s.sb.journalStart(slot) + h.Version%2
	if err := s.writeOn(ctx, s.rdev, blk, h.encode(blk, slot)); err != nil {
		return err
	}
	return s.rdev.Flush(ctx)
}

// ReplayOwner replays (ReplaySlot) every slot whose journal header names
// owner (Config.Owner of the incarnation that opened it): what the
// recovery coordinator calls for a dead incarnation. An owner that never
// opened the store has nothing to replay. When owner is the incarnation
// before this store's own (its slot is this store's now), Open replayed
// the slot: that replay is reported again (ReplayStats.ByOpen), nothing
// is done. Idempotent.
func (s *Store) ReplayOwner(ctx context.Context, owner string) ([]ReplayStats, error) {
	if owner == "" {
		return nil, fmt.Errorf("store: replay of an empty owner")
	}
	var out []ReplayStats
	for slot := 0; slot < int(s.sb.Slots); slot++ {
		if slot == s.slot {
			if s.openReplayed != nil && s.openReplayed.owner == owner {
				// An earlier incarnation of this node: Open recovered
				// the slot before this store wrote anything.
				out = append(out, s.openReplayed.st)
			}
			continue
		}
		h, err := s.readJournalHeader(ctx, slot)
		if err != nil {
			return out, err
		}
		if h.Owner != owner {
			continue
		}
		st, err := s.replaySlot(ctx, slot, owner)
		out = append(out, st)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}
