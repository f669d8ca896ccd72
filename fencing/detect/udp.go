package detect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Endpoint is where a peer listens for heartbeats, as its membership
// record says.
type Endpoint struct {
	Incarnation string
	// Addr is a UDP "host:port".
	Addr string
}

// UDPConfig configures a UDP detector.
type UDPConfig struct {
	// Self is this node's incarnation, sent in every heartbeat. Required.
	Self Peer
	// Listen is the UDP address to receive heartbeats on, for example
	// "127.0.0.1:0" (the kernel picks the port; see Addr). Required
	// unless Conn is given.
	Listen string
	// Conn, when set, is a socket the caller bound and hands over (the
	// same port across a node's incarnations): the detector reads and
	// sends on it but does not close it; Run returns with the socket's
	// read deadline set in the past, and the next NewUDP clears it.
	Conn *net.UDPConn
	// Peers returns the other members and their heartbeat endpoints. It
	// is called every Interval; the watched set follows it. Required.
	Peers func() map[string]Endpoint
	// Detector sets the timing.
	Detector Config
	// OnSuspect is called, from the detector's goroutine, for every newly
	// suspected peer. It must not block for long. Required.
	OnSuspect func(Suspicion)
}

// Validate says which field is wrong.
func (c UDPConfig) Validate() error {
	switch {
	case c.Self.Name == "":
		return fmt.Errorf("detect: UDPConfig.Self.Name is empty")
	case c.Listen == "" && c.Conn == nil:
		return fmt.Errorf("detect: UDPConfig.Listen is empty and no Conn is given")
	case c.Peers == nil:
		return fmt.Errorf("detect: UDPConfig.Peers is nil")
	case c.OnSuspect == nil:
		return fmt.Errorf("detect: UDPConfig.OnSuspect is nil")
	}
	if err := c.Detector.Validate(); err != nil {
		return fmt.Errorf("detect: UDPConfig.Detector: %w", err)
	}
	if _, err := (Heartbeat{From: c.Self}).MarshalBinary(); err != nil {
		return fmt.Errorf("detect: UDPConfig.Self: %w", err)
	}
	return nil
}

// UDP sends heartbeats to every peer and feeds the ones it receives to a
// Detector.
type UDP struct {
	cfg  UDPConfig
	det  *Detector
	conn *net.UDPConn
	own  bool // conn was bound here and is closed by Run
	clk  clock.Clock
	log  hclog.Logger
	seq  uint64
	bad  atomic.Int64

	mu    sync.Mutex
	addrs map[string]*net.UDPAddr
}

// NewUDP binds the listening socket; Run starts the heartbeats.
func NewUDP(cfg UDPConfig) (*UDP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	det, err := NewDetector(cfg.Detector)
	if err != nil {
		return nil, err
	}
	conn, own := cfg.Conn, false
	if conn == nil {
		la, err := net.ResolveUDPAddr("udp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("detect: listen address %q: %w", cfg.Listen, err)
		}
		if conn, err = net.ListenUDP("udp", la); err != nil {
			return nil, fmt.Errorf("detect: listening on %s: %w", cfg.Listen, err)
		}
		own = true
	} else if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("detect: handed-over socket: %w", err)
	}
	u := &UDP{cfg: cfg, det: det, conn: conn, own: own, clk: det.clk, log: det.log, addrs: map[string]*net.UDPAddr{}}
	return u, nil
}

// Addr is the address heartbeats are received on.
func (u *UDP) Addr() string { return u.conn.LocalAddr().String() }

// Detector is the core, for status and tests.
func (u *UDP) Detector() *Detector { return u.det }

// Malformed counts datagrams dropped as malformed.
func (u *UDP) Malformed() int64 { return u.bad.Load() }

// Run sends, receives and checks until ctx ends, then closes the socket
// (or, for a handed-over Conn, stops reading from it).
func (u *UDP) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(u.receive)
	defer wg.Wait()
	if u.own {
		defer u.conn.Close()
	} else {
		defer u.conn.SetReadDeadline(time.Unix(1, 0))
	}
	t := u.clk.NewTicker(u.cfg.Detector.Interval)
	defer t.Stop()
	for {
		u.syncPeers()
		u.send()
		for _, s := range u.det.Check() {
			u.cfg.OnSuspect(s)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C():
		}
	}
}

// syncPeers makes the watched set follow membership.
func (u *UDP) syncPeers() {
	peers := u.cfg.Peers()
	for _, p := range u.det.Watched() {
		if _, ok := peers[p.Name]; !ok {
			u.det.Forget(p.Name)
		}
	}
	addrs := map[string]*net.UDPAddr{}
	for name, ep := range peers {
		if name == u.cfg.Self.Name {
			continue
		}
		u.det.Watch(Peer{Name: name, Incarnation: ep.Incarnation})
		a, err := net.ResolveUDPAddr("udp", ep.Addr)
		if err != nil {
			u.log.Warn("bad heartbeat address of peer", "peer", name, "addr", ep.Addr, "error", err)
			continue
		}
		addrs[name] = a
	}
	u.mu.Lock()
	u.addrs = addrs
	u.mu.Unlock()
}

func (u *UDP) send() {
	u.seq++
	b, err := Heartbeat{From: u.cfg.Self, Seq: u.seq}.MarshalBinary()
	if err != nil {
		return // checked by Validate
	}
	u.mu.Lock()
	addrs := u.addrs
	u.mu.Unlock()
	for name, a := range addrs {
		if _, err := u.conn.WriteToUDP(b, a); err != nil {
			u.log.Debug("sending heartbeat", "peer", name, "error", err)
		}
	}
}

func (u *UDP) receive() {
	buf := make([]byte, MaxHeartbeat+1)
	failures := 0
	for {
		n, _, err := u.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !u.own && errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			// A socket that keeps failing would spin; give up on it and
			// let the peers' silence be noticed.
			if failures++; failures > 1000 {
				u.log.Error("heartbeat socket keeps failing, no longer receiving", "error", err)
				return
			}
			continue
		}
		failures = 0
		var h Heartbeat
		if err := h.UnmarshalBinary(buf[:n]); err != nil {
			u.bad.Add(1)
			continue
		}
		u.det.Heard(h.From)
	}
}
