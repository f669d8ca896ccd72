package node

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/detect"
	"github.com/shoal-ha/shoal/internal/keys"
)

// detectService runs the direct peer failure detector for each
// incarnation: UDP heartbeats to every other node, and a recovery request
// for a node that stays silent past the detect timeout. It only runs when
// every leg is fenced by persistent reservations, because recovering a node
// whose lease still runs is safe only when the fence cuts it off.
type detectService struct {
	n     *cluster.Node
	role  *recoveryRole
	log   hclog.Logger
	addr  string // fixed across incarnations, published in member records
	mu    sync.Mutex
	stopf context.CancelFunc
}

// newDetectService returns nil when the detector does not apply.
func newDetectService(n *cluster.Node, role *recoveryRole) (*detectService, error) {
	v := n.Config().Volume
	interval, timeout := v.Detect()
	if len(v.Legs) == 0 || timeout == 0 || !reservationsOnEveryLeg(v) {
		return nil, nil
	}
	addr := v.HeartbeatAddr
	if addr == "" {
		host, _, err := net.SplitHostPort(n.Config().Admin.Addr)
		if err != nil || n.Config().Admin.Addr == "off" {
			host = "127.0.0.1"
		}
		// Pick a free port once; every incarnation listens on it.
		l, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("failure detector: %w", err)
		}
		addr = l.LocalAddr().String()
		l.Close()
	}
	d := &detectService{n: n, role: role, log: n.Logger().Named("detect"), addr: addr}
	d.log.Info("direct failure detector on", "addr", addr, "interval", interval, "timeout", timeout)
	return d, nil
}

// reservationsOnEveryLeg says whether every leg is reached through a
// protocol with persistent reservations (the fence then cuts a suspected
// node off even while its lease runs).
func reservationsOnEveryLeg(v cluster.VolumeConfig) bool {
	if v.Fencing != cluster.FenceAuto && v.Fencing != cluster.FenceReservations {
		return false
	}
	for _, l := range v.Legs {
		if !strings.HasPrefix(l, "iscsi://") {
			return false
		}
	}
	return true
}

func (d *detectService) describe(info *keys.MemberRecord) { info.HeartbeatAddr = d.addr }

func (d *detectService) start(sess *cluster.Session) error {
	interval, timeout := d.n.Config().Volume.Detect()
	cfg := detect.DefaultConfig()
	cfg.Interval, cfg.Timeout, cfg.Logger = interval, timeout, d.log
	u, err := detect.NewUDP(detect.UDPConfig{
		Self:     detect.Peer{Name: sess.Name(), Incarnation: sess.Incarnation()},
		Listen:   d.addr,
		Peers:    d.peers,
		Detector: cfg,
		OnSuspect: func(s detect.Suspicion) {
			d.suspect(s)
		},
	})
	if err != nil {
		return fmt.Errorf("failure detector: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.mu.Lock()
	d.stopf = cancel
	d.mu.Unlock()
	go func() {
		if err := u.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("failure detector stopped", "error", err)
		}
	}()
	return nil
}

func (d *detectService) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopf != nil {
		d.stopf()
		d.stopf = nil
	}
}

// peers are the other live nodes that run a detector.
func (d *detectService) peers() map[string]detect.Endpoint {
	out := map[string]detect.Endpoint{}
	self := d.n.Config().NodeName
	for _, m := range d.n.Watcher().Members() {
		if m.Name == self || m.HeartbeatAddr == "" || m.Kind != keys.KindNode {
			continue
		}
		out[m.Name] = detect.Endpoint{Incarnation: m.Incarnation, Addr: m.HeartbeatAddr}
	}
	return out
}

// suspect asks for the recovery of a silent node, if this node can still
// act as a member.
func (d *detectService) suspect(s detect.Suspicion) {
	if !d.n.Ready() {
		return
	}
	for _, m := range d.n.Watcher().Members() {
		if m.Name == s.Peer.Name && m.Incarnation == s.Peer.Incarnation {
			d.log.Warn("peer silent: asking for its recovery", "peer", s.Peer.String(), "silent", s.Silent.Round(time.Millisecond))
			d.role.request(fencing.NewNodeRef(m.Name, m.Incarnation, m.Lease))
			return
		}
	}
}
