// Package storenode runs the store in a Shoal node: a node.Part that opens
// the store on the node's volume in the node's slot on every incarnation,
// with the incarnation's lock manager, and a node.Replayer that replays a
// dead incarnation's journal in the recovery coordinator's replay step.
//
//	sp := storenode.New(storenode.Config{Slot: *cfg.Volume.Slot, Format: true})
//	node.Run(ctx, cfg, sp, webPart) // the web part reads sp.Store()
package storenode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storedlm"
)

// Config shapes the store part.
type Config struct {
	// Slot is the node's store slot: the volume's bitmap slot.
	Slot int
	// Format lays a new store on a volume that holds none (one node does
	// it, under a cluster-wide lock); otherwise such a volume fails the
	// incarnation's start.
	Format bool
	// FormatOptions are used by Format; Slots 0 means 4.
	FormatOptions store.FormatOptions
	// Handlers apply application records in recovery (store.Config).
	Handlers map[string]store.Handler
	// WriteBuffer is store.Config.WriteBuffer (0: the default).
	WriteBuffer int
	// MaxCachedLocks is store.Config.MaxCachedLocks (0: the default).
	MaxCachedLocks int
	// Logger gets the part's log lines; nil means none.
	Logger hclog.Logger
}

// RecoveryWriter is the volume's ability to write with recovery region
// locks (granted over the ones a dead node left behind), which the replay
// of a dead node's journal needs: without it the replay waits for the
// dead node's region locks, which are released only after the replay.
type RecoveryWriter interface {
	RecoveryWriter() blockdev.Device
}

// OrderedWriter is the volume's ability to take the writes of a caller
// that orders its overlapping writes itself (mirror.Volume.OrderedWriter):
// the store does, with its own locks, so its writes take their regions'
// locks shared and cached instead of an exclusive lock per written range,
// which another range of the same node's journal would call back.
type OrderedWriter interface {
	OrderedWriter() blockdev.Device
}

// HasRecoveryWriter reports whether the mirror volume can write for a
// recovery.
func HasRecoveryWriter(v *mirror.Volume) bool {
	_, ok := any(v).(RecoveryWriter)
	return ok
}

// Part is the store's node part.
type Part struct {
	cfg Config
	log hclog.Logger

	mu sync.Mutex
	st *store.Store
	// opened is closed when an incarnation's store is open (st set); a
	// new one is made when it closes.
	opened chan struct{}
	// unfinished is why the last Stop left the incarnation to its
	// recovery (LeftUnfinished); nil when it closed the store whole.
	unfinished error
}

var (
	_ node.Part          = (*Part)(nil)
	_ node.Replayer      = (*Part)(nil)
	_ node.RecordCounter = (*Part)(nil)
	_ node.Unfinished    = (*Part)(nil)
)

// New returns the part.
func New(cfg Config) *Part {
	l := cfg.Logger
	if l == nil {
		l = hclog.NewNullLogger()
	}
	return &Part{cfg: cfg, log: l, opened: make(chan struct{})}
}

// openStore waits (within ctx) for the incarnation's store to be open.
func (p *Part) openStore(ctx context.Context) (*store.Store, error) {
	for {
		p.mu.Lock()
		st, ch := p.st, p.opened
		p.mu.Unlock()
		if st != nil {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("storenode: replay requested before the store is open: %w", ctx.Err())
		}
	}
}

// Name is "store".
func (p *Part) Name() string { return "store" }

// Store is the store of the current incarnation, nil between
// incarnations (and on a node without a volume).
func (p *Part) Store() *store.Store {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// owner names an incarnation in the store's journal headers.
func owner(name, incarnation string) string { return name + "/" + incarnation }

// formatLock serializes formatting among the nodes.
const formatLock = "store-format"

// Start opens the store (formatting it first when configured and the
// volume holds none).
func (p *Part) Start(ctx context.Context, inc node.Incarnation) error {
	if inc.Volume == nil {
		p.log.Warn("no volume: the store is not opened")
		return nil
	}
	locks := storedlm.New(inc.Locks)
	if _, err := store.ReadSuperblock(ctx, inc.Volume); errors.Is(err, store.ErrNotStore) {
		if !p.cfg.Format {
			return fmt.Errorf("storenode: the volume holds no store (format one, or set Format): %w", err)
		}
		if err := p.format(ctx, locks, inc); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	cfg := store.DefaultConfig(inc.Volume, p.cfg.Slot, locks)
	if ow, ok := any(inc.Volume).(OrderedWriter); ok {
		// The replay of a dead node's journal writes through the same
		// view: the recovery order releases the dead node's region locks
		// and checksum holds in its resync step, before the replay, so
		// the replay's writes need no recovery region locks (granted over
		// orphans, never cached: three lock requests per block) and share
		// the node's cached ones.
		cfg.Device = ow.OrderedWriter()
		cfg.RecoveryDevice = cfg.Device
	} else if rw, ok := any(inc.Volume).(RecoveryWriter); ok {
		cfg.RecoveryDevice = rw.RecoveryWriter()
	}
	cfg.Owner = owner(inc.Session.Name(), inc.Session.Incarnation())
	cfg.Handlers = p.cfg.Handlers
	cfg.Logger = p.log
	if p.cfg.WriteBuffer > 0 {
		cfg.WriteBuffer = p.cfg.WriteBuffer
	}
	cfg.MaxCachedLocks = p.cfg.MaxCachedLocks
	st, err := store.Open(ctx, cfg)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.st = st
	close(p.opened)
	p.mu.Unlock()
	return nil
}

// formatOrphanCheck is how often a wait for the format lock looks
// whether its holder died.
const formatOrphanCheck = 250 * time.Millisecond

// lockFormat takes the format lock. A holder that died with it (killed
// while it formatted, as when every node dies during the cluster's first
// start) leaves it orphaned until its recovery, whose replay step needs a
// store open, and no store opens before the format: the lock is then
// taken with a recovery grant over the orphan. Formatting again is safe:
// Format writes the superblock last, so a store without one was never
// used.
func lockFormat(ctx context.Context, locks store.Locker) (store.Lock, error) {
	orphans, tells := locks.(store.OrphanReporter)
	if !tells {
		return locks.Lock(ctx, formatLock, store.Exclusive, store.LockOptions{})
	}
	for {
		if orphans.Orphaned(formatLock, store.Exclusive) {
			return locks.Lock(ctx, formatLock, store.Exclusive, store.LockOptions{Recovery: true})
		}
		wctx, cancel := context.WithTimeout(ctx, formatOrphanCheck)
		l, err := locks.Lock(wctx, formatLock, store.Exclusive, store.LockOptions{})
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return l, err
		}
	}
}

func (p *Part) format(ctx context.Context, locks store.Locker, inc node.Incarnation) error {
	l, err := lockFormat(ctx, locks)
	if err != nil {
		return err
	}
	defer l.Release()
	if _, err := store.ReadSuperblock(ctx, inc.Volume); err == nil {
		return nil // another node formatted it meanwhile
	}
	if err := l.Use(); err != nil {
		return err
	}
	opts := p.cfg.FormatOptions
	if opts.Slots == 0 {
		opts.Slots = 4
	}
	sb, err := store.Format(ctx, inc.Volume, opts)
	if err != nil {
		return fmt.Errorf("storenode: formatting the store: %w", err)
	}
	p.log.Info("formatted a store on the volume", "blocks", sb.Blocks, "slots", sb.Slots, "groups", sb.AGCount)
	return nil
}

// Stop closes the store (bounded by store.Config.CloseTimeout). After a lost
// lease the close's writes are refused by fencing; the journal stays for
// the recovery.
func (p *Part) Stop(clean bool) {
	p.mu.Lock()
	st := p.st
	p.st = nil
	if st != nil {
		p.opened = make(chan struct{})
	}
	p.mu.Unlock()
	if st == nil {
		return
	}
	switch err := st.Close(); {
	case errors.Is(err, store.ErrUnwritten):
		// The slot's journal holds committed blocks the volume did not
		// take; the store keeps their locks, and the node must not hand
		// them on in a clean leave of the lock manager (LeftUnfinished).
		p.mu.Lock()
		p.unfinished = err
		p.mu.Unlock()
		p.log.Error("closing the store: committed blocks not in place; this incarnation must be recovered (journal replay) before its locks are released", "clean", clean, "error", err)
	case err != nil:
		p.log.Warn("closing the store", "clean", clean, "error", err)
	}
}

// LeftUnfinished reports (node.Unfinished) that the last Stop closed the
// store with committed blocks not written in place (store.ErrUnwritten):
// the incarnation must be recovered, its journal replayed, before its
// locks go to other nodes.
func (p *Part) LeftUnfinished() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.unfinished
	p.unfinished = nil
	return err
}

// Replay replays the journal of the dead incarnation victim (idempotent).
func (p *Part) Replay(ctx context.Context, victim fencing.NodeRef, inc node.Incarnation) error {
	_, err := p.ReplayRecords(ctx, victim, inc)
	return err
}

// ReplayWaits says what the store's running replay does and waits for
// (node.ReplayWaiter): the phase of each slot's replay, then the store
// locks (with their holders) and the journal writer its transactions wait
// for, with how long.
func (p *Part) ReplayWaits(victim fencing.NodeRef) []recovery.Wait {
	st := p.Store()
	if st == nil {
		return []recovery.Wait{{What: "store", Detail: "not open on this incarnation"}}
	}
	var out []recovery.Wait
	now := time.Now()
	for _, w := range st.ReplayWaits() {
		d := w.Detail
		if !w.Since.IsZero() {
			d = strings.TrimPrefix(fmt.Sprintf("%s; waiting %s", d, now.Sub(w.Since).Round(time.Millisecond)), "; ")
		}
		out = append(out, recovery.Wait{What: "store " + w.What, Resource: w.Resource, Detail: d})
	}
	return out
}

// ReplayRecords replays like Replay and counts the journal transactions
// replayed and the application records handed over (node.RecordCounter).
func (p *Part) ReplayRecords(ctx context.Context, victim fencing.NodeRef, inc node.Incarnation) (int64, error) {
	if inc.Volume == nil {
		return 0, nil
	}
	// The store of this incarnation may still be opening: when the victim
	// is this node's earlier incarnation, the open recovers its slot (see
	// store.Open), and when every node died at once, every coordinator's
	// open waits for nothing a recovery holds.
	st, err := p.openStore(ctx)
	if err != nil {
		return 0, err
	}
	stats, err := st.ReplayOwner(ctx, owner(victim.Name, victim.Incarnation))
	var n int64
	for _, s := range stats {
		n += int64(s.Applied + s.Records)
		msg := "replayed a dead incarnation's journal"
		if s.ByOpen {
			msg = "a dead incarnation's journal was replayed by this incarnation's store open"
		}
		p.log.Info(msg, "victim", victim.Name, "slot", s.Slot,
			"transactions", s.Transactions, "blocks", s.Blocks, "records", s.Records, "took", s.Duration)
	}
	return n, err
}
