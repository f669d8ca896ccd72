// Package webnode runs the web tier as a part of a node (node.Part), on top
// of the store's part (store/storenode), which opens the store on the
// node's shared volume on every incarnation and replays a dead node's
// journal in its recovery. The sessions' recovery handler goes into the
// store part's handlers, so that replay finishes the dead node's journaled
// requests:
//
//	wc := web.DefaultConfig()
//	sp := storenode.New(storenode.Config{Slot: slot, Format: true, Handlers: webnode.Handlers(wc)})
//	wp := webnode.New(webnode.Config{Web: wc, Store: sp.Store})
//	n, err := node.Start(ctx, clusterCfg, sp, wp) // the store part first
package webnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/portres"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/session"
)

// Config configures the part.
type Config struct {
	// Web configures the web tier.
	Web web.Config
	// Store is the current incarnation's store (storenode.Part.Store),
	// opened by a part started before this one. Required.
	Store func() *store.Store
	// Logger gets the part's log lines. Default none.
	Logger hclog.Logger
	// ReusePort listens on Web.Addr with SO_REUSEPORT (socket(7)), so
	// that a supervisor that reserved the port beforehand (bound, never
	// listening: internal/portres) hands it to every incarnation of the
	// node without a window in which another program takes it
	// (cluster.Config.ReusePort). Default false.
	ReusePort bool
}

// Handlers are the store recovery handlers the web tier needs
// (storenode.Config.Handlers): the sessions' intents.
func Handlers(cfg web.Config) map[string]store.Handler {
	return map[string]store.Handler{session.RecordIntent: web.RecoveryHandler(cfg)}
}

// ErrNoStore: no store is open on this incarnation (the store part is
// missing, or was not started before the web part). The node abandons the
// incarnation and tries a new one, which fails the same way until the parts
// are given in the right order.
var ErrNoStore = errors.New("webnode: no store open on this incarnation")

// Part is the web tier of one node.
type Part struct {
	cfg Config
	log hclog.Logger

	mu   sync.Mutex
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

// Start implements node.Part: serve the site and the sessions API from the
// incarnation's store.
func (p *Part) Start(ctx context.Context, inc node.Incarnation) error {
	var st *store.Store
	if p.cfg.Store != nil {
		st = p.cfg.Store()
	}
	if st == nil {
		return ErrNoStore
	}
	mem := membership{self: session.Owner{Node: inc.Session.Name(), Incarnation: inc.Session.Incarnation()}, locks: inc.Locks}
	srv, err := newServer(ctx, p.cfg.Web, st, mem)
	if err != nil {
		return err
	}
	ln, err := portres.Listen(ctx, p.cfg.Web.Addr, p.cfg.ReusePort)
	if err != nil {
		srv.Close()
		return fmt.Errorf("webnode: listening on %s: %w", p.cfg.Web.Addr, err)
	}
	go func() {
		// Serve returns nil after Close; anything else means the node
		// stopped answering on its web address while it thinks it serves.
		if err := srv.Serve(ln); err != nil {
			p.log.Error("web tier stopped serving", "addr", ln.Addr().String(), "error", err)
		}
	}()
	addr := ln.Addr()
	p.mu.Lock()
	p.srv, p.addr = srv, addr
	p.mu.Unlock()
	p.log.Info("web tier serving", "addr", addr.String())
	return nil
}

// newServer builds the web tier (which makes its directories in the store,
// waiting for their locks) and returns when it is built or when ctx ends:
// a node stopping while another holds those locks must not wait for them.
// A server built after ctx ended is closed.
func newServer(ctx context.Context, cfg web.Config, st *store.Store, mem web.Membership) (*web.Server, error) {
	type built struct {
		srv *web.Server
		err error
	}
	ch := make(chan built, 1)
	go func() {
		srv, err := web.NewServer(cfg, web.FromStore(st), mem)
		ch <- built{srv, err}
	}()
	select {
	case b := <-ch:
		return b.srv, b.err
	case <-ctx.Done():
		go func() {
			// The store part's Stop, which follows, closes the store and
			// ends the wait.
			if b := <-ch; b.srv != nil {
				b.srv.Close()
			}
		}()
		return nil, fmt.Errorf("webnode: start given up while making the web tier's directories: %w", ctx.Err())
	}
}

// Stop implements node.Part. It returns within Config.Web.ShutdownTimeout:
// requests still running then are cut (after a lost lease the store refuses
// their writes anyway, and recovery finishes what they journaled).
func (p *Part) Stop(clean bool) {
	p.mu.Lock()
	srv := p.srv
	p.srv, p.addr = nil, nil
	p.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
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
