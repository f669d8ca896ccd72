package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Handler applies one application record of a dead slot in recovery. It
// runs inside a transaction of the recovering node's slot; that
// transaction also advances the dead slot's replay cursor, so the record
// is handled exactly once even if the recovering node dies too. An error
// stops recovery of the slot (it can be run again).
type Handler func(ctx context.Context, tx *Tx, rec Record) error

// Config opens a store as one node slot.
type Config struct {
	// Device is the volume holding the store (the mirror volume, or any
	// blockdev.Device). Its block size must divide BlockSize. Required.
	Device blockdev.Device
	// RecoveryDevice is the same volume as Device, written through in
	// recovery (ReplaySlot and the handlers it runs): writes whose
	// region locks are recovery locks, granted over the ones a dead node
	// left behind (the mirror's RecoveryWriter). Nil means Device.
	RecoveryDevice blockdev.Device
	// Slot is this node's slot, 0 <= Slot < the store's slot count. Each
	// live node uses its own.
	Slot int
	// Locks is the lock manager (the DLM through storedlm, or MemLocks in
	// tests). Required.
	Locks Locker
	// LockPrefix starts every lock name; empty means "store-" and the
	// first 8 bytes of the store's UUID in hex, which keeps two stores on
	// one lock manager apart.
	LockPrefix string
	// Owner names who opens the slot (the node and its incarnation); it is
	// written in the slot's journal header so that the recovery of a dead
	// incarnation finds its slot (ReplayOwner). At most 200 bytes.
	Owner string
	// Handlers apply the records of this slot's own journal that a
	// previous incarnation left unacknowledged when Open finds the slot
	// unrecovered, and of dead slots in ReplaySlot. Kinds without a
	// handler are kept pending.
	Handlers map[string]Handler
	// WriteBuffer is how many bytes of written file data a File keeps
	// before it commits them on its own (Sync and Close always commit).
	WriteBuffer int
	// OrphanCheck is how often a transaction that holds locks and waits
	// for one more asks the lock manager whether that lock is held by a
	// dead node (an orphan, see OrphanReporter). If so it gives up what
	// it holds, waits for that lock alone and starts over: the wait lasts
	// until the recovery ends, and the recovery's record handlers may
	// need a lock it holds (on any node). With a Locker that cannot tell,
	// every such wait gives way after OrphanCheck. Zero means
	// DefaultOrphanCheck.
	OrphanCheck time.Duration
	// CommitWriteTimeout bounds a commit's writes from its journal write
	// on (the commit record, its flush and the in-place writes), which do
	// not take the caller's context: a commit cut short between its
	// commit record and its in-place writes would leave the transaction
	// durable and its blocks not in place. It also bounds a checkpoint's
	// new attempt at in-place writes that failed (ErrUnwritten). Zero
	// means DefaultCommitWriteTimeout.
	CommitWriteTimeout time.Duration
	// CheckpointInterval is how often a node with committed blocks not
	// yet in place (a commit leaves them to the checkpoint: deferInPlace)
	// checkpoints on its own. A hand-over of a lock whose blocks are
	// among them checkpoints at once; this bounds how long the device
	// lags what the node committed for readers that take no lock (a
	// listing's DirEntry.Info, StatFS) and how much a replay of its
	// journal writes. Zero means DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// MaxCachedLocks is how many lock grants this node keeps cached at
	// most; past it the inode locks it used least lately are given up in
	// the background (written back first), down to 63/64 of it,
	// as GFS2 reclaims idle glocks. Every grant is a request key in etcd
	// and an entry in every node's copy of the lock table, and every file
	// a node creates or reads leaves one behind: without a bound a web
	// node's lock table grows by a lock per request it answers. Zero
	// means DefaultMaxCachedLocks.
	MaxCachedLocks int
	// CloseTimeout bounds Close's final checkpoint and the write-back of
	// the locks it gives up, on a volume that stopped answering. Zero
	// means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// ReplayBatch is how many of a dead slot's records the replay hands
	// to their handlers in one transaction at most (one journal commit,
	// with the cursor that says they are handled, for the batch; a batch
	// that does not fit in the journal is halved). Zero means
	// DefaultReplayBatch.
	ReplayBatch int
	// Logger gets the store's log lines; nil means no logging.
	Logger hclog.Logger
	// Clock stamps modification times and times OrphanCheck; nil means
	// the real clock.
	Clock clock.Clock
}

// DefaultOrphanCheck is Config.OrphanCheck's default: well above a lock
// hand-over between live nodes, well below a client's patience.
const DefaultOrphanCheck = 250 * time.Millisecond

// DefaultCheckpointInterval is Config.CheckpointInterval's default: a
// checkpoint costs a node about one commit per interval.
const DefaultCheckpointInterval = time.Second

// DefaultReplayBatch is Config.ReplayBatch's default: a web node's
// requests in flight at its death are handed over in one or two commits.
const DefaultReplayBatch = 16

// DefaultCommitWriteTimeout is Config.CommitWriteTimeout's default: far
// above a healthy volume's write and flush, short enough that a volume
// that stopped answering is reported.
const DefaultCommitWriteTimeout = 30 * time.Second

// DefaultConfig returns a Config for slot with the defaults filled in.
func DefaultConfig(dev blockdev.Device, slot int, locks Locker) Config {
	return Config{Device: dev, Slot: slot, Locks: locks, WriteBuffer: 4 << 20}
}

// Validate says which field is wrong, if any.
func (c *Config) Validate() error {
	switch {
	case c.Device == nil:
		return errors.New("store config: Device is required")
	case c.Device.BlockSize() <= 0 || BlockSize%c.Device.BlockSize() != 0:
		return fmt.Errorf("store config: Device block size %d does not divide the store block size %d", c.Device.BlockSize(), BlockSize)
	case c.Locks == nil:
		return errors.New("store config: Locks is required")
	case c.Slot < 0 || c.Slot >= MaxSlots:
		return fmt.Errorf("store config: Slot %d outside 0..%d", c.Slot, MaxSlots-1)
	case c.WriteBuffer < 0:
		return fmt.Errorf("store config: WriteBuffer %d is negative", c.WriteBuffer)
	case c.CommitWriteTimeout < 0:
		return fmt.Errorf("store config: CommitWriteTimeout %s is negative", c.CommitWriteTimeout)
	case c.CloseTimeout < 0:
		return fmt.Errorf("store config: CloseTimeout %s is negative", c.CloseTimeout)
	case c.MaxCachedLocks < 0:
		return fmt.Errorf("store config: MaxCachedLocks %d is negative", c.MaxCachedLocks)
	case c.CheckpointInterval < 0:
		return fmt.Errorf("store config: CheckpointInterval %s is negative", c.CheckpointInterval)
	case c.OrphanCheck < 0:
		return fmt.Errorf("store config: OrphanCheck %s is negative", c.OrphanCheck)
	case c.ReplayBatch < 0:
		return fmt.Errorf("store config: ReplayBatch %d is negative", c.ReplayBatch)
	case len(c.Owner) > maxOwner:
		return fmt.Errorf("store config: Owner longer than %d bytes", maxOwner)
	case len(c.LockPrefix) > 64:
		return fmt.Errorf("store config: LockPrefix longer than 64 bytes")
	}
	return nil
}

// Store is one node's handle on the shared store. It is safe for
// concurrent use.
type Store struct {
	cfg        Config
	dev        blockdev.Device
	rdev       blockdev.Device // Device for recovery writes
	sb         *Superblock
	slot       int
	lockPrefix string
	log        hclog.Logger
	clk        clock.Clock

	gmu    sync.Mutex
	glocks map[glockKey]*glock

	slotLock *glock
	// ownOrphan: Open took the slot's lock as a recovery grant over a
	// dead earlier incarnation of this node (acquireSlot), so its own
	// replay hands records over under recovery locks.
	ownOrphan bool
	jr        *journalWriter
	unwritten unwritten // committed images not in place yet

	hmu      sync.Mutex
	handlers map[string]Handler

	readOnly bool // OpenReadOnly: no slot, no changes

	// Recoveries this node runs as the coordinator (ReplaySlot): while
	// one runs, recRunning is closed and plain transactions wait for no
	// lock while they hold others (Tx.acquire).
	recMu      sync.Mutex
	recN       int
	recRunning chan struct{}
	rep        replayState // guarded by recMu

	agOrder []int // allocation groups in the order this node tries them
	// What this node last learned of allocation groups it does not hold
	// (allocPass): found full, or held by another node. Hints only.
	agMu    sync.Mutex
	agNotes map[int]agNote

	// Inode locks asked for ahead (lockAhead): the blocks in flight, the
	// blocks reserved for inodes, and the goroutines, which Close ends
	// (aheadStop) and waits for.
	aheadMu   sync.Mutex
	ahead     map[uint64]bool
	reserved  map[uint64]bool // free blocks kept for the next inodes
	aheadCtx  context.Context
	aheadStop context.CancelFunc
	aheadWG   sync.WaitGroup
	closing   chan struct{}
	bg        sync.WaitGroup // checkpointLoop, shrinkLoop
	// heldSet holds the glocks whose plain grant this node keeps
	// (glock.hold), held counts them; past Config.MaxCachedLocks a new
	// one kicks shrinkLoop. useTick orders
	// the glocks' last uses (glock.used).
	held       atomic.Int64
	heldMu     sync.Mutex
	heldSet    map[*glock]struct{}
	useTick    atomic.Int64
	shrinkKick chan struct{}
	// openReplayed is what Open's recovery of this node's own slot did,
	// and for which earlier owner (ReplayOwner reports it); nil when the
	// slot had no owner or had this one.
	openReplayed *ownReplay
	closed       atomic.Bool
	// restarted, when set (tests), is told why a transaction starts over.
	restarted func(*retryError)
	stats     storeStats
	// statMemo remembers quickStat's answers given from the lock caches.
	statMemo statMemo
}

type storeStats struct {
	cachedLocks  atomic.Uint64
	lockRequests atomic.Uint64
	lockReleases atomic.Uint64
	commits      atomic.Uint64
	checkpoints  atomic.Uint64
	gaveWay      atomic.Uint64
}

// Stats are counters of one node's store.
type Stats struct {
	// CachedLocks counts lock uses served by a cached grant (no lock
	// manager request).
	CachedLocks uint64
	// LockRequests counts grants asked from the lock manager.
	LockRequests uint64
	// LockReleases counts grants handed back.
	LockReleases uint64
	// Commits counts journal transactions committed.
	Commits uint64
	// Checkpoints counts journal checkpoints.
	Checkpoints uint64
	// GaveWay counts transactions that gave up their locks to wait for
	// one alone (behind a dead node's orphan, or a recovery of this node
	// began: Config.OrphanCheck).
	GaveWay uint64
}

// Stats returns the node's counters.
func (s *Store) Stats() Stats {
	return Stats{CachedLocks: s.stats.cachedLocks.Load(), LockRequests: s.stats.lockRequests.Load(),
		LockReleases: s.stats.lockReleases.Load(), Commits: s.stats.commits.Load(), Checkpoints: s.stats.checkpoints.Load(), GaveWay: s.stats.gaveWay.Load()}
}

// Superblock returns a copy of the store's superblock.
func (s *Store) Superblock() Superblock { return *s.sb }

// Slot is the slot this node opened.
func (s *Store) Slot() int { return s.slot }

// ReadSuperblock reads and checks the store superblock of dev.
func ReadSuperblock(ctx context.Context, dev blockdev.Device) (*Superblock, error) {
	b := make([]byte, BlockSize)
	if dev.Size() < BlockSize {
		return nil, fmt.Errorf("%w: device of %d bytes", ErrNotStore, dev.Size())
	}
	if err := dev.ReadAt(ctx, b, 0); err != nil {
		return nil, fmt.Errorf("store: reading the superblock: %w", err)
	}
	sb, err := DecodeSuperblock(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotStore, err)
	}
	if int64(sb.Blocks)*BlockSize > dev.Size() {
		return nil, fmt.Errorf("%w: store of %d blocks on a device of %d bytes", ErrCorrupt, sb.Blocks, dev.Size())
	}
	return sb, nil
}

// Open opens the store on cfg.Device as slot cfg.Slot. It takes the slot's
// lock (ErrSlotBusy when a live node has it, after waiting for ctx) and,
// when the slot's journal holds transactions a crashed incarnation left,
// replays them and hands its unacknowledged records to cfg.Handlers first.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sb, err := ReadSuperblock(ctx, cfg.Device)
	if err != nil {
		return nil, err
	}
	if cfg.Slot >= int(sb.Slots) {
		return nil, fmt.Errorf("store config: Slot %d, the store has %d slots", cfg.Slot, sb.Slots)
	}
	s := &Store{cfg: cfg, dev: cfg.Device, rdev: cfg.RecoveryDevice, sb: sb, slot: cfg.Slot, log: cfg.Logger, clk: cfg.Clock,
		glocks: map[glockKey]*glock{}, handlers: map[string]Handler{}, closing: make(chan struct{}), recRunning: make(chan struct{}), shrinkKick: make(chan struct{}, 1)}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	if s.cfg.CommitWriteTimeout == 0 {
		s.cfg.CommitWriteTimeout = DefaultCommitWriteTimeout
	}
	if s.cfg.CloseTimeout == 0 {
		s.cfg.CloseTimeout = DefaultCloseTimeout
	}
	if s.cfg.OrphanCheck == 0 {
		s.cfg.OrphanCheck = DefaultOrphanCheck
	}
	if s.cfg.MaxCachedLocks == 0 {
		s.cfg.MaxCachedLocks = DefaultMaxCachedLocks
	}
	if s.cfg.ReplayBatch == 0 {
		s.cfg.ReplayBatch = DefaultReplayBatch
	}
	if s.cfg.CheckpointInterval == 0 {
		s.cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if s.rdev == nil {
		s.rdev = s.dev
	}
	if s.clk == nil {
		s.clk = clock.Real()
	}
	if s.cfg.WriteBuffer == 0 {
		s.cfg.WriteBuffer = 4 << 20
	}
	s.lockPrefix = lockPrefixOf(sb, cfg.LockPrefix)
	for k, h := range cfg.Handlers {
		s.handlers[k] = h
	}
	s.agOrder = agOrder(cfg.Slot%int(sb.AGCount), int(sb.AGCount))
	s.ahead, s.reserved = map[uint64]bool{}, map[uint64]bool{}
	s.aheadCtx, s.aheadStop = context.WithCancel(context.Background())
	s.slotLock = s.glockFor(classSlot, uint64(cfg.Slot))
	releaseReplay, err := s.acquireSlot(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("%w: slot %d: %w", ErrSlotBusy, cfg.Slot, err)
		}
		return nil, err
	}
	s.ownOrphan = releaseReplay != nil
	s.jr = &journalWriter{s: s, slot: cfg.Slot, start: sb.journalStart(cfg.Slot), size: sb.JournalBlocks}
	err = nil
	if s.ownOrphan {
		err = s.placeDeadSlots(ctx, cfg.Slot)
	}
	if err == nil {
		var st ReplayStats
		var prev *journalHeader
		if prev, err = s.readJournalHeader(ctx, cfg.Slot); err == nil {
			st, err = s.recoverSlot(ctx, cfg.Slot, true, true)
		}
		if err == nil && prev.Owner != "" && prev.Owner != cfg.Owner {
			st.ByOpen = true
			s.openReplayed = &ownReplay{owner: prev.Owner, st: st}
		}
		if err == nil && (st.Applied > 0 || st.Records > 0) {
			s.log.Info("replayed this slot's journal left by an earlier incarnation", "slot", cfg.Slot, "transactions", st.Transactions,
				"blocks", st.Blocks, "records", st.Records, "took", st.Duration)
		}
	}
	if err != nil {
		if releaseReplay != nil {
			releaseReplay()
		}
		s.slotLock.mu.Lock()
		s.slotLock.dropLocked(context.Background())
		s.slotLock.dropRecoveryLocked()
		s.slotLock.mu.Unlock()
		s.slotLock.unlockLocal(Exclusive)
		close(s.closing)
		return nil, fmt.Errorf("store: recovering own slot %d: %w", cfg.Slot, err)
	}
	err = s.jr.setOwner(ctx, cfg.Owner)
	if releaseReplay != nil {
		// After the new owner is in the header: a coordinator's replay of
		// the dead incarnation then finds the slot recovered.
		releaseReplay()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	s.bg.Add(2)
	go s.checkpointLoop()
	go s.shrinkLoop()
	s.log.Info("store opened", "slot", cfg.Slot, "blocks", sb.Blocks, "groups", sb.AGCount)
	return s, nil
}

// checkpointLoop checkpoints every Config.CheckpointInterval while this
// node keeps committed blocks that are not in place, until the store
// closes. A failure is logged once until a checkpoint succeeds again (the
// next hand-over or interval tries again). A checkpoint is cut short when
// the store closes (Close makes its own, within CloseTimeout) and lasts at
// most CommitWriteTimeout; cut anywhere it leaves the journal's tail where
// it was, which is safe.
func (s *Store) checkpointLoop() {
	defer s.bg.Done()
	tick := s.clk.NewTicker(s.cfg.CheckpointInterval)
	defer tick.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-stop:
		}
	}()
	failing := false
	for {
		select {
		case <-s.closing:
			return
		case <-tick.C():
		}
		if s.unwritten.n.Load() == 0 {
			continue
		}
		cctx, ccancel := context.WithTimeout(ctx, s.cfg.CommitWriteTimeout)
		err := s.checkpoint(cctx)
		ccancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && !failing:
			s.log.Warn("periodic checkpoint failed; hand-overs and the next interval try again", "error", err)
		case err == nil && failing:
			s.log.Info("periodic checkpoint succeeded again")
		}
		failing = err != nil
	}
}

// ownReplay is Open's recovery of the store's own slot (openReplayed).
type ownReplay struct {
	owner string
	st    ReplayStats
}

// errSlotOrphaned cuts Open's plain wait for its slot's lock when the
// holder turns out to be dead.
var errSlotOrphaned = errors.New("store: the slot's lock is held by a dead incarnation")

// acquireSlot takes the slot's lock for Open. Slots are per node, so a
// dead holder of this slot's lock (an orphan, see OrphanReporter) can only
// be an earlier incarnation of this node that nobody has recovered yet.
// Waiting for its recovery to release the orphan is not safe: when every
// incarnation of the cluster died at once (etcd unreachable from all
// nodes), the only coordinators are the new incarnations, and a
// coordinator's replay step needs its own store open. So the slot is
// taken with a recovery grant over the orphan, under the store's replay
// lock (takeReplayLock), and Open recovers the slot itself (recoverSlot,
// after the other dead slots' images, its handlers' transactions under
// recovery locks), as the coordinator's replay would; ReplayOwner on any
// node then finds the slot owned by the new incarnation and leaves it.
// On that path releaseReplay is the replay lock's release, which Open
// calls once the slot is recovered; the slot's recovery grant is the
// store's slot lock until Close. Otherwise releaseReplay is nil.
func (s *Store) acquireSlot(ctx context.Context) (releaseReplay func(), err error) {
	g := s.glockFor(classSlot, uint64(s.slot))
	orphans, tells := s.cfg.Locks.(OrphanReporter)
	if !tells {
		return nil, g.acquire(ctx, Exclusive, false, false)
	}
	if !orphans.Orphaned(g.name, Exclusive) {
		// A live holder (an earlier incarnation not yet seen dead, or a
		// coordinator replaying the slot) may die while this waits: the
		// plain request would then wait behind its orphan.
		err := s.acquireWatched(ctx, g, Exclusive, orphans, 0, errSlotOrphaned)
		if !errors.Is(err, errSlotOrphaned) {
			return nil, err
		}
	}
	s.log.Info("this slot's lock is held by a dead incarnation of this node; recovering the slot under a recovery grant", "slot", s.slot)
	release, err := s.takeReplayLock(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.acquire(ctx, Exclusive, false, true); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// Handle registers h for records of kind, for ReplaySlot.
func (s *Store) Handle(kind string, h Handler) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.handlers[kind] = h
}

func (s *Store) handler(kind string) Handler {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	return s.handlers[kind]
}

// DefaultCloseTimeout is Config.CloseTimeout's default.
const DefaultCloseTimeout = 10 * time.Second

// Close checkpoints the journal and releases every lock. Files still open
// are not committed. It returns within Config.CloseTimeout plus the time
// the lock manager takes to release (bounded by the lock manager's own
// timeouts).
//
// When the final checkpoint fails (committed transactions could not be
// written in place, or their writes not made durable in time) Close
// returns ErrUnwritten and keeps the slot's lock and the locks that guard
// those blocks: the slot must be replayed (by its next Open or by the
// node's recovery) before anyone uses them, so the node must be recovered
// as a failed one, its locks not released cleanly.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(s.closing)
	s.bg.Wait()
	// Locks asked for ahead are given up asking; those granted are held
	// like any other and dropped below.
	if s.aheadStop != nil {
		s.aheadStop()
		s.aheadWG.Wait()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CloseTimeout)
	defer cancel()
	err := s.checkpoint(ctx)
	// Any failure leaves the journal's tail before blocks whose images
	// may not be durable in place: handing their locks on would let a
	// later replay of this journal write over another node's changes.
	unwritten := err != nil && s.jr != nil
	if unwritten && !errors.Is(err, ErrUnwritten) {
		err = fmt.Errorf("%w: final checkpoint: %w", ErrUnwritten, err)
	}
	if unwritten {
		s.log.Error("closing with committed blocks not in place: the slot's journal must be replayed", "error", err)
	}
	s.gmu.Lock()
	gs := make([]*glock, 0, len(s.glocks))
	for _, g := range s.glocks {
		gs = append(gs, g)
	}
	s.gmu.Unlock()
	for _, g := range gs {
		if g == s.slotLock && g != nil {
			continue
		}
		g.mu.Lock()
		if unwritten && g.dirty > s.jr.checkpointed.Load() {
			g.mu.Unlock()
			continue // guards blocks only the journal holds
		}
		if e := g.dropLocked(ctx); e != nil && err == nil {
			err = e
		}
		if e := g.dropRecoveryLocked(); e != nil && err == nil {
			err = e
		}
		g.mu.Unlock()
	}
	if s.slotLock != nil && !unwritten {
		s.slotLock.mu.Lock()
		if e := s.slotLock.dropLocked(ctx); e != nil && err == nil {
			err = e
		}
		if e := s.slotLock.dropRecoveryLocked(); e != nil && err == nil {
			err = e
		}
		s.slotLock.mu.Unlock()
	}
	return err
}

// beginRecovery marks a recovery of this node as the coordinator until
// the returned func is called: plain transactions waiting for a lock while
// holding others give way (the wait may be behind the dead node's orphan,
// released only after the recovery, and the recovery may need what they
// hold), as the DLM holds back normal requests on a dead node's resources
// until its recovery ends.
func (s *Store) beginRecovery() (end func()) {
	s.recMu.Lock()
	s.recN++
	if s.recN == 1 {
		close(s.recRunning)
	}
	s.recMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.recMu.Lock()
			s.recN--
			if s.recN == 0 {
				s.recRunning = make(chan struct{})
			}
			s.recMu.Unlock()
		})
	}
}

// recoveryStarted is closed while (or once) a recovery of this node runs.
func (s *Store) recoveryStarted() <-chan struct{} {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return s.recRunning
}

func (s *Store) alive() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// readBlock reads block blk from the device.
func (s *Store) readBlock(ctx context.Context, blk uint64) ([]byte, error) {
	if blk >= s.sb.Blocks {
		return nil, fmt.Errorf("%w: block %d beyond the store's %d blocks", ErrCorrupt, blk, s.sb.Blocks)
	}
	b := make([]byte, BlockSize)
	if err := s.readAt(ctx, b, int64(blk)*BlockSize); err != nil {
		return nil, fmt.Errorf("store: reading block %d: %w", blk, err)
	}
	return b, nil
}

// VerifiedReader is a device that can read from every copy it keeps (the
// mirror volume): the store asks for a metadata block that failed its
// checksum again, accepting only a copy that passes, and the device
// rewrites the damaged copies from it.
type VerifiedReader interface {
	ReadVerified(ctx context.Context, p []byte, off int64, valid func([]byte) bool) error
}

// readMeta reads metadata block blk guarded by g, through g's cache. A
// block that fails its checksum is read again from the device's other
// copies when it keeps some (VerifiedReader).
func (s *Store) readMeta(ctx context.Context, g *glock, blk uint64) ([]byte, error) {
	if b := g.cached(blk); b != nil {
		return b, nil
	}
	b, err := s.readBlock(ctx, blk)
	if err != nil {
		return nil, err
	}
	if _, err := openBlock(b, blk, 0); err != nil {
		vr, ok := s.dev.(VerifiedReader)
		good := func(p []byte) bool { _, err := openBlock(p, blk, 0); return err == nil }
		if !ok || vr.ReadVerified(ctx, b, int64(blk)*BlockSize, good) != nil {
			// Not cached: the caller's decode reports the damage, and a
			// later read (after a repair) must see the device again.
			return b, nil
		}
		s.log.Warn("metadata block damaged on a copy, read from another", "block", blk)
	}
	// From here on b is shared by every reader of the node: nobody writes
	// into it (a change makes a new image, see Tx.write).
	g.cache(blk, b)
	return b, nil
}

// writeBlocks writes contiguous blocks starting at blk.
func (s *Store) writeBlocks(ctx context.Context, blk uint64, p []byte) error {
	return s.writeOn(ctx, s.dev, blk, p)
}

// writeOn writes contiguous blocks starting at blk through dev (the
// device or the recovery device).
func (s *Store) writeOn(ctx context.Context, dev blockdev.Device, blk uint64, p []byte) error {
	if blk+uint64(len(p)/BlockSize) > s.sb.Blocks {
		return fmt.Errorf("store: write of block %d beyond the store", blk)
	}
	if err := dev.WriteAt(ctx, p, int64(blk)*BlockSize); err != nil {
		return fmt.Errorf("store: writing block %d: %w", blk, err)
	}
	return nil
}
