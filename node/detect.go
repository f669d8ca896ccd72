package node

import (
	"context"
	"fmt"
	"net"
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
	n    *cluster.Node
	role *recoveryRole
	log  hclog.Logger
	// conn is bound once for the node's life: every incarnation's
	// detector uses it, and its address is published in member records.
	conn  *net.UDPConn
	addr  string
	mu    sync.Mutex
	stopf context.CancelFunc
	done  chan struct{}
}

// newDetectService returns nil when the detector does not apply: it runs
// only when every leg has the persistent-reservation ability (withPR of
// them do, as fencing.LegsOf decides) and fencing uses it, because
// recovering a node whose lease still runs is safe only when the fence
// cuts it off.
func newDetectService(n *cluster.Node, role *recoveryRole, withPR int) (*detectService, error) {
	v := n.Config().Volume
	interval, timeout := n.Config().Detect()
	if len(v.Legs) == 0 || timeout == 0 || withPR < len(v.Legs) ||
		v.FencingMethod() != cluster.FenceAuto && v.FencingMethod() != cluster.FenceReservations {
		return nil, nil
	}
	addr := v.HeartbeatAddr
	if addr == "" {
		host, _, err := net.SplitHostPort(n.Config().Admin.Addr)
		if err != nil || n.Config().Admin.Addr == "off" {
			host = "127.0.0.1"
		}
		addr = net.JoinHostPort(host, "0")
	}
	conn, err := listenUDP(addr)
	if err != nil {
		return nil, fmt.Errorf("failure detector: listening on %s: %w", addr, err)
	}
	d := &detectService{n: n, role: role, log: n.Logger().Named("detect"), conn: conn, addr: conn.LocalAddr().String()}
	d.log.Info("direct failure detector on", "addr", d.addr, "interval", interval, "timeout", timeout)
	return d, nil
}

// close releases the heartbeat socket, once the node has stopped.
func (d *detectService) close() {
	d.stop()
	d.conn.Close()
}

func (d *detectService) describe(info *keys.MemberRecord) { info.HeartbeatAddr = d.addr }

func (d *detectService) start(sess *cluster.Session) error {
	interval, timeout := d.n.Config().Detect()
	cfg := detect.DefaultConfig()
	cfg.Interval, cfg.Timeout, cfg.Logger = interval, timeout, d.log
	u, err := detect.NewUDP(detect.UDPConfig{
		Self:     detect.Peer{Name: sess.Name(), Incarnation: sess.Incarnation()},
		Conn:     d.conn,
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
	done := make(chan struct{})
	d.mu.Lock()
	d.stopf, d.done = cancel, done
	d.mu.Unlock()
	go func() {
		defer close(done)
		if err := u.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("failure detector stopped", "error", err)
		}
	}()
	return nil
}

// stop ends the incarnation's detector and waits for it to let go of the
// socket, so the next incarnation's detector has it alone.
func (d *detectService) stop() {
	d.mu.Lock()
	stopf, done := d.stopf, d.done
	d.stopf, d.done = nil, nil
	d.mu.Unlock()
	if stopf != nil {
		stopf()
		<-done
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
