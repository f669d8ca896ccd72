// Package webnode runs the web tier as a part of a node (node.Part): on
// each incarnation it opens the store on the node's shared volume, with the
// lock manager's locks and the sessions' recovery handler, and serves the
// site and the sessions API; in a dead incarnation's recovery it replays
// the dead node's store journal, which finishes its journaled requests.
//
//	p := webnode.New(webnode.Config{Web: webCfg, Slot: 0, Format: true, SlotOf: lookup})
//	n, err := node.Start(ctx, clusterCfg, p)
package webnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storedlm"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/session"
)

// FormatLock is the lock manager's named resource held EX while a node
// looks for a store on the volume and lays one when there is none, so that
// only one node formats.
const FormatLock = "web-store-format"

// Config configures the part.
type Config struct {
	// Web configures the web tier.
	Web web.Config
	// Slot is this node's store slot (its journal): the node's volume
	// slot.
	Slot int
	// Format lays a store on the volume when it holds none (first start of
	// a cluster), with as many slots as the volume has.
	Format bool
	// SlotOf says which store slot a dead incarnation wrote with (the
	// volume slot it registered). Required for Replay.
	SlotOf func(ctx context.Context, victim fencing.NodeRef) (int, error)
	// Logger gets the part's log lines. Default none.
	Logger hclog.Logger
}

// ErrNoVolume: the node has no shared volume; the web tier needs one.
var ErrNoVolume = errors.New("webnode: the node has no shared volume")

// Part is the web tier of one node.
type Part struct {
	cfg Config
	log hclog.Logger

	mu   sync.Mutex
	st   *store.Store
	srv  *web.Server
	addr net.Addr
}

// New returns the part; it does nothing until the node starts it.
func New(cfg Config) *Part {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Web.Logger == nil {
		cfg.Web.Logger = cfg.Logger
	}
	return &Part{cfg: cfg, log: cfg.Logger.Named("webnode")}
}

// Name implements node.Part.
func (p *Part) Name() string { return "web" }

// Addr is the address the current incarnation serves on (nil between
// incarnations).
func (p *Part) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Store is the current incarnation's store (nil between incarnations).
func (p *Part) Store() *store.Store {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// Start implements node.Part: open (or lay) the store, then serve.
func (p *Part) Start(ctx context.Context, inc node.Incarnation) error {
	if inc.Volume == nil {
		return ErrNoVolume
	}
	if err := p.cfg.Web.Validate(); err != nil {
		return err
	}
	scfg := store.DefaultConfig(inc.Volume, p.cfg.Slot, storedlm.New(inc.Locks))
	scfg.Handlers = map[string]store.Handler{session.RecordIntent: web.RecoveryHandler(p.cfg.Web)}
	scfg.Logger = p.cfg.Logger.Named("store")
	st, err := store.Open(ctx, scfg)
	if errors.Is(err, store.ErrNotStore) && p.cfg.Format {
		st, err = p.format(ctx, inc, scfg)
	}
	if err != nil {
		return fmt.Errorf("webnode: opening the store on slot %d: %w", p.cfg.Slot, err)
	}
	mem := membership{self: session.Owner{Node: inc.Session.Name(), Incarnation: inc.Session.Incarnation()}, locks: inc.Locks}
	srv, err := web.NewServer(p.cfg.Web, web.FromStore(st), mem)
	if err != nil {
		st.Close()
		return err
	}
	addr, err := srv.Start()
	if err != nil {
		srv.Close()
		st.Close()
		return fmt.Errorf("webnode: listening on %s: %w", p.cfg.Web.Addr, err)
	}
	p.mu.Lock()
	p.st, p.srv, p.addr = st, srv, addr
	p.mu.Unlock()
	p.log.Info("web tier serving", "addr", addr.String(), "slot", p.cfg.Slot)
	return nil
}

// format lays a store on the volume under FormatLock, unless another node
// did meanwhile, and opens it.
func (p *Part) format(ctx context.Context, inc node.Incarnation, scfg store.Config) (*store.Store, error) {
	lk, err := inc.Locks.Acquire(ctx, dlm.Named(FormatLock), dlm.EX)
	if err != nil {
		return nil, err
	}
	defer lk.Release()
	st, err := store.Open(ctx, scfg)
	if !errors.Is(err, store.ErrNotStore) {
		return st, err
	}
	slots := inc.Volume.Geometry().Slots
	if _, err := store.Format(ctx, inc.Volume, store.FormatOptions{Slots: slots, Label: "shoal-web"}); err != nil {
		return nil, err
	}
	p.log.Info("laid a store on the volume", "slots", slots)
	return store.Open(ctx, scfg)
}

// Stop implements node.Part. A clean stop lets requests in flight finish
// (Config.Web.ShutdownTimeout); after a lost lease the listener and the
// store are closed at once, as others may be recovering this incarnation.
func (p *Part) Stop(clean bool) {
	p.mu.Lock()
	st, srv := p.st, p.srv
	p.st, p.srv, p.addr = nil, nil, nil
	p.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	if st != nil {
		if err := st.Close(); err != nil && clean {
			p.log.Warn("closing the store", "error", err)
		}
	}
}

// Replay implements node.Replayer: replay the dead incarnation's store
// journal, which hands its unacknowledged request intents to the sessions'
// recovery handler. The store makes a second replay change nothing more.
func (p *Part) Replay(ctx context.Context, victim fencing.NodeRef, inc node.Incarnation) error {
	st := p.Store()
	if st == nil {
		return errors.New("webnode: no store open on this incarnation")
	}
	if p.cfg.SlotOf == nil {
		return errors.New("webnode: Config.SlotOf is not set")
	}
	slot, err := p.cfg.SlotOf(ctx, victim)
	if err != nil {
		return err
	}
	stats, err := st.ReplaySlot(ctx, slot)
	if err != nil {
		return fmt.Errorf("webnode: replaying slot %d of %s: %w", slot, victim, err)
	}
	p.log.Info("replayed a dead node's store journal", "victim", victim.String(), "slot", slot,
		"transactions", stats.Transactions, "requests", stats.Records, "took", stats.Duration)
	return nil
}

// membership answers the web tier's questions from the lock manager: an
// incarnation whose locks are held for recovery is dead and not yet
// recovered; any other is treated as live (a key it holds "in progress" is
// answered 409 until its recovery, which lists it dead, has run).
type membership struct {
	self  session.Owner
	locks *dlm.Node
}

func (m membership) Self() session.Owner { return m.self }

func (m membership) State(o session.Owner) session.OwnerState {
	if o == m.self {
		return session.OwnerLive
	}
	for _, d := range m.locks.DeadOwners() {
		if d.Node == o.Node && d.Incarnation == o.Incarnation {
			return session.OwnerRecovering
		}
	}
	return session.OwnerLive
}
