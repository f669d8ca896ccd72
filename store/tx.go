package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"
)

// Tx is one journal transaction of this node's slot: the metadata changes
// and application records made through it commit together (one commit
// record) or not at all. The locks it takes are held until it ends.
// A Tx is used by one goroutine.
type Tx struct {
	s        *Store
	ctx      context.Context
	recovery bool
	// orphanWait, when positive, bounds a wait for a lock a dead node
	// holds (UpdateRecoveryBound).
	orphanWait time.Duration
	// keepShared, when positive, keeps every grant the transaction holds
	// Shared for at least that long (glock.keepShared).
	keepShared time.Duration

	held     map[*glock]LockMode
	last     *glock // the latest lock in lock order the transaction holds
	external map[*glock]bool

	dirty      map[uint64]*dirtyBlock
	dirtyOrder []uint64
	data       []dataWrite
	pend       map[uint64][]byte // data blocks written by the transaction
	frees      map[uint64]bool
	records    []Record
	acks       []uint64

	retry *retryError
	done  bool

	// pooled are the run buffers of file data to give back once the
	// transaction committed (Tx.runBuffer).
	pooled []*[]byte

	lastNewInode uint64 // the last inode the transaction made (lockAhead)
}

type dirtyBlock struct {
	g   *glock
	img []byte
}

// retryError asks the transaction runner to start over with a lock taken
// first: taking it now, out of lock order, could deadlock. With wait the
// transaction gave way to a recovery of this node while it waited for the
// lock holding others: the runner waits for the lock alone first.
type retryError struct {
	g    *glock
	mode LockMode
	wait bool
}

func (e *retryError) Error() string {
	return fmt.Sprintf("store: lock %s (%s) taken out of order; transaction starts over", e.g.name, e.mode)
}

type lockHint struct {
	g    *glock
	mode LockMode
}

// maxAttempts bounds how often a transaction starts over for lock order.
const maxAttempts = 32

// run runs fn in a transaction, starting over (with the locks it was
// missing taken first, in lock order) when it needed a lock out of order.
func (s *Store) run(ctx context.Context, recovery bool, fn func(tx *Tx) error) error {
	return s.runBounded(ctx, recovery, 0, fn)
}

// runBounded is run whose waits for a dead node's lock last at most
// orphanWait (when positive): then ErrRecovering.
func (s *Store) runBounded(ctx context.Context, recovery bool, orphanWait time.Duration, fn func(tx *Tx) error) error {
	if err := s.alive(); err != nil {
		return err
	}
	var hints []lockHint
	for attempt := 0; attempt < maxAttempts; attempt++ {
		tx := &Tx{s: s, ctx: ctx, recovery: recovery, orphanWait: orphanWait, held: map[*glock]LockMode{}, external: map[*glock]bool{},
			dirty: map[uint64]*dirtyBlock{}, frees: map[uint64]bool{}, pend: map[uint64][]byte{}}
		err := tx.takeHints(hints)
		if err == nil {
			err = fn(tx)
		}
		if err == nil && tx.retry != nil {
			err = tx.retry
		}
		if err == nil {
			err = tx.commit()
			if err == nil {
				tx.recycleRuns()
			}
		}
		if rerr := tx.end(); err == nil {
			err = rerr
		}
		if err == nil && tx.lastNewInode != 0 && !recovery {
			s.lockAhead(tx.lastNewInode)
		}
		var r *retryError
		if errors.As(err, &r) {
			if s.restarted != nil {
				s.restarted(r)
			}
			hints = addHint(hints, r.g, r.mode)
			if r.wait {
				// Holding nothing, a wait stands in no recovery's way;
				// the grant stays cached for the next attempt.
				if err := s.acquireBounded(ctx, r.g, r.mode, orphanWait); errors.Is(err, errGlockGone) {
					continue // the next attempt looks it up again
				} else if err != nil {
					return err
				}
				if err := r.g.put(r.mode, false); err != nil {
					return err
				}
			}
			continue
		}
		return err
	}
	return ErrConflict
}

func addHint(hints []lockHint, g *glock, mode LockMode) []lockHint {
	for i, h := range hints {
		if h.g.class == g.class && h.g.id == g.id {
			hints[i].g = g // the one looked up last (prune)
			if mode == Exclusive {
				hints[i].mode = Exclusive
			}
			return hints
		}
	}
	hints = append(hints, lockHint{g, mode})
	sort.Slice(hints, func(i, j int) bool { return hints[i].g.before(hints[j].g) })
	return hints
}

func (tx *Tx) takeHints(hints []lockHint) error {
	for _, h := range hints {
		if err := tx.lock(h.g, h.mode); err != nil {
			return err
		}
	}
	return nil
}

// lock takes g in mode for the rest of the transaction. Locks are taken
// in lock order; one that comes before a lock already held is only tried,
// and if it would wait the transaction starts over with it taken first.
func (tx *Tx) lock(g *glock, mode LockMode) error {
	if tx.retry != nil {
		return tx.retry
	}
	if m, ok := tx.held[g]; ok || tx.external[g] {
		if !ok || m == Exclusive || mode == Shared {
			return nil
		}
		if tx.upgradeRecovery(g) {
			return nil
		}
		tx.retry = &retryError{g, Exclusive, false}
		return tx.retry
	}
	try := tx.last != nil && g.before(tx.last)
	yielded, err := tx.acquire(g, mode, try)
	if errors.Is(err, ErrWouldBlock) {
		tx.retry = &retryError{g, mode, yielded}
		return tx.retry
	}
	if errors.Is(err, errGlockGone) {
		tx.retry = &retryError{tx.s.glockFor(g.class, g.id), mode, false}
		return tx.retry
	}
	if err != nil {
		return err
	}
	tx.held[g] = mode
	if tx.last == nil || tx.last.before(g) {
		tx.last = g
	}
	if mode == Shared && tx.keepShared > 0 && !tx.recovery {
		g.keepShared(tx.keepShared)
	}
	return nil
}

// upgradeRecovery makes g, held Shared by a recovery transaction, held
// Exclusive when what it holds is a recovery grant: that is always EX,
// with the local side taken exclusively (glock.acquireRecovery), so
// nothing is asked and the transaction need not start over (and ask for
// all its recovery grants again) for a block it read and now changes.
func (tx *Tx) upgradeRecovery(g *glock) bool {
	if !tx.recovery {
		return false
	}
	g.mu.Lock()
	ex := g.rhold != nil
	g.mu.Unlock()
	if ex {
		tx.held[g] = Exclusive
	}
	return ex
}

// tryLock takes g only if that needs no waiting or comes in lock order
// (waiting then is safe); it reports whether g is held.
func (tx *Tx) tryLock(g *glock, mode LockMode) (bool, error) {
	return tx.tryLockIn(g, mode, false)
}

// tryLockNoWait is tryLock that never waits: a lock this node would have
// to ask another node for, or wait for a local user of, is not taken
// (false, nil). Asking the lock manager costs a request (refused at once,
// leaving nothing queued, nor a blocking callback to the holder).
func (tx *Tx) tryLockNoWait(g *glock, mode LockMode) (bool, error) {
	return tx.tryLockIn(g, mode, true)
}

func (tx *Tx) tryLockIn(g *glock, mode LockMode, noWait bool) (bool, error) {
	if m, ok := tx.held[g]; ok {
		if m == Exclusive || mode == Shared || tx.upgradeRecovery(g) {
			return true, nil
		}
		return false, nil
	}
	try := noWait || (tx.last != nil && g.before(tx.last))
	yielded, err := tx.acquire(g, mode, try)
	if yielded {
		tx.retry = &retryError{g, mode, true}
		return false, tx.retry
	}
	if errors.Is(err, ErrWouldBlock) {
		return false, nil
	}
	if errors.Is(err, errGlockGone) {
		tx.retry = &retryError{tx.s.glockFor(g.class, g.id), mode, false}
		return false, tx.retry
	}
	if err != nil {
		return false, err
	}
	tx.held[g] = mode
	if tx.last == nil || tx.last.before(g) {
		tx.last = g
	}
	return true, nil
}

// acquire takes g for the transaction. A plain transaction that holds
// locks and waits for another gives way (yielded, with ErrWouldBlock) when
// a recovery of this node begins, or when the lock manager says a dead
// node holds g (checked every Config.OrphanCheck): such a wait lasts until
// the recovery ends, and the recovery's handlers may need a lock it holds.
// It then starts over, waiting for g holding none.
func (tx *Tx) acquire(g *glock, mode LockMode, try bool) (yielded bool, err error) {
	if tx.recovery || try {
		return false, g.acquire(tx.ctx, mode, try, tx.recovery)
	}
	if len(tx.held) == 0 && len(tx.external) == 0 {
		return false, tx.s.acquireBounded(tx.ctx, g, mode, tx.orphanWait)
	}
	started := tx.s.recoveryStarted()
	select {
	case <-started:
		// A recovery runs here: wait for nothing while holding locks.
		err := g.acquire(tx.ctx, mode, true, false)
		return errors.Is(err, ErrWouldBlock), err
	default:
	}
	ctx, cancel := context.WithCancelCause(tx.ctx)
	defer cancel(nil)
	tick := tx.s.clk.NewTicker(tx.s.cfg.OrphanCheck)
	defer tick.Stop()
	stop := make(chan struct{})
	defer close(stop)
	orphans, tells := tx.s.cfg.Locks.(OrphanReporter)
	go func() {
		for {
			select {
			case <-started:
				cancel(errGiveWay)
				return
			case <-tick.C():
				if !tells || orphans.Orphaned(g.name, mode) {
					cancel(errGiveWay)
					return
				}
			case <-stop:
				return
			}
		}
	}()
	err = g.acquire(ctx, mode, false, false)
	if err != nil && errors.Is(context.Cause(ctx), errGiveWay) && tx.ctx.Err() == nil {
		tx.s.stats.gaveWay.Add(1)
		return true, ErrWouldBlock
	}
	return false, err
}

// errGiveWay ends a plain transaction's wait for a lock while it holds
// others (Tx.acquire).
var errGiveWay = errors.New("store: a lock waited for while holding others is a dead node's")

// end releases the transaction's locks.
func (tx *Tx) end() error {
	tx.done = true
	var err error
	for g, m := range tx.held {
		if e := g.put(m, tx.recovery); e != nil && err == nil {
			err = e
		}
	}
	tx.held = nil
	return err
}

// read returns metadata block blk guarded by g (held by the transaction),
// as changed so far by the transaction.
func (tx *Tx) read(g *glock, blk uint64) ([]byte, error) {
	if d := tx.dirty[blk]; d != nil {
		return d.img, nil
	}
	return tx.s.readMeta(tx.ctx, g, blk)
}

// write sets the new image of metadata block blk guarded by g, which the
// transaction must hold EX.
func (tx *Tx) write(g *glock, blk uint64, img []byte) error {
	if tx.held[g] != Exclusive && !tx.external[g] {
		return fmt.Errorf("store: block %d changed without its lock %s held EX", blk, g.name)
	}
	if d := tx.dirty[blk]; d != nil {
		d.img = img
		return nil
	}
	tx.dirty[blk] = &dirtyBlock{g, img}
	tx.dirtyOrder = append(tx.dirtyOrder, blk)
	return nil
}

// commit applies the frees and writes the transaction to the journal.
func (tx *Tx) commit() error {
	freed := tx.frees
	if err := tx.applyFrees(); err != nil {
		return err
	}
	if len(tx.dirty) == 0 && len(tx.records) == 0 && len(tx.acks) == 0 && len(tx.data) == 0 {
		return nil
	}
	if tx.s.readOnly {
		return ErrReadOnly
	}
	jt := &journalTx{Records: tx.records, Acks: tx.acks}
	touched := map[*glock]bool{}
	for _, blk := range tx.dirtyOrder {
		d := tx.dirty[blk]
		jt.Targets = append(jt.Targets, blk)
		jt.Images = append(jt.Images, d.img)
		touched[d.g] = true
	}
	use := func() error {
		for g := range touched {
			if err := g.use(); err != nil {
				return err
			}
		}
		return nil
	}
	dev := tx.s.dev
	if tx.recovery {
		dev = tx.s.rdev
	}
	committed, err := tx.s.jr.commit(tx.ctx, dev, jt, tx.data, freed, use, tx.recovery)
	if err != nil {
		if committed || jt.Seq != 0 {
			// The journal write or its flush failed: perhaps committed
			// (a replay would apply it), nothing in place. The caches
			// must not serve what the device may not hold.
			for g := range touched {
				g.mu.Lock()
				g.blocks = map[uint64][]byte{}
				g.mu.Unlock()
				g.modified(jt.Seq)
			}
		}
		return err
	}
	for _, blk := range tx.dirtyOrder {
		d := tx.dirty[blk]
		d.g.cache(blk, d.img)
	}
	for g := range touched {
		g.modified(jt.Seq)
	}
	return nil
}

// Log adds an application record to the transaction. Records stay
// pending until a later transaction acknowledges them (Ack); if this
// node dies first, recovery hands them to the handler registered for
// kind, in journal order, exactly once. The returned ID identifies the
// record for Ack. kind is 1..255 bytes; payload at most 1 MiB.
func (tx *Tx) Log(kind string, payload []byte) (uint64, error) {
	if len(kind) == 0 || len(kind) > 255 {
		return 0, fmt.Errorf("store: record kind of %d bytes (1..255)", len(kind))
	}
	if len(payload) > 1<<20 {
		return 0, fmt.Errorf("%w: record payload of %d bytes (max 1 MiB)", ErrTooLarge, len(payload))
	}
	if tx.s.jr == nil {
		return 0, ErrReadOnly
	}
	id := tx.s.jr.nextRec.Add(1) - 1
	tx.records = append(tx.records, Record{Kind: kind, Slot: tx.s.slot, ID: id, Payload: slices.Clone(payload)})
	return id, nil
}

// Ack marks record id of this node's slot as done: recovery will not hand
// it over once this transaction commits.
func (tx *Tx) Ack(id uint64) {
	tx.acks = append(tx.acks, id)
}

// acquireBounded is g.acquire for a plain user holding no other lock,
// whose wait for a lock a dead node holds (an orphan, as the Locker's
// OrphanReporter tells) lasts at most wait when wait is positive: then
// ErrRecovering. Looked at every eighth of Config.OrphanCheck.
func (s *Store) acquireBounded(ctx context.Context, g *glock, mode LockMode, wait time.Duration) error {
	orphans, tells := s.cfg.Locks.(OrphanReporter)
	if wait <= 0 || !tells || g.covers(mode) {
		// A grant this node keeps cached needs no watch (most of a busy
		// node's requests): at worst a local user holds it a moment.
		return g.acquire(ctx, mode, false, false)
	}
	err := s.acquireWatched(ctx, g, mode, orphans, wait, ErrRecovering)
	if errors.Is(err, ErrRecovering) && ctx.Err() == nil {
		return fmt.Errorf("%w: lock %s held by a dead node for %v", ErrRecovering, g.name, wait)
	}
	return err
}

// acquireWatched takes g plainly, giving up with cause once a dead node's
// grant of g (an orphan) has stood in its way for wait (zero: as soon as
// one is seen), looked at every eighth of Config.OrphanCheck. A wait
// behind an orphan lasts until the dead node's recovery ends, which may
// need what the caller is about to do. It returns cause, or the acquire's
// own error.
func (s *Store) acquireWatched(ctx context.Context, g *glock, mode LockMode, orphans OrphanReporter, wait time.Duration, cause error) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := s.clk.NewTicker(max(s.cfg.OrphanCheck/8, time.Millisecond))
		defer tick.Stop()
		var since time.Time
		for {
			select {
			case <-tick.C():
				switch now := s.clk.Now(); {
				case !orphans.Orphaned(g.name, mode):
					since = time.Time{}
				case since.IsZero() && wait > 0:
					since = now
				case wait == 0 || now.Sub(since) >= wait:
					cancel(cause)
					return
				}
			case <-stop:
				return
			}
		}
	}()
	err := g.acquire(wctx, mode, false, false)
	if err != nil && errors.Is(context.Cause(wctx), cause) && ctx.Err() == nil {
		return cause
	}
	return err
}
