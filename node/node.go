package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dashboard"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// ErrNoVolume: the node has no open volume (none configured, or no
// incarnation registered right now). Retry once the node is ready.
var ErrNoVolume = errors.New("no open volume")

// StopTimeout bounds Stop: the parts of the incarnation are let go, the
// lease revoked (one etcd request timeout at most) and the etcd member
// closed within it, or Stop returns anyway.
const StopTimeout = 15 * time.Second

// Node is a running node: its membership, lock manager, volume, detector,
// recovery role and admin API.
type Node struct {
	cfg     cluster.Config
	cn      *cluster.Node
	locks   *lockService
	vols    *volumeService
	role    *recoveryRole
	det     *detectService
	admin   *cluster.AdminServer
	extra   []Part
	started int // parts of extra started on the current incarnation (Run's goroutine only)
	ui      *dashboard.Server
	story   *recovery.Story
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
}

// Run assembles a node from cfg (which must have passed Validate) and runs
// it until ctx ends (a clean stop) or the node leaves the cluster: what
// the daemon does.
func Run(ctx context.Context, cfg cluster.Config, parts ...Part) error {
	n, err := Start(ctx, cfg, parts...)
	if err != nil {
		return err
	}
	return n.Wait()
}

// Start assembles a node from cfg (which must have passed Validate): it
// checks the legs, starts the etcd member (or connects to the external
// cluster), binds the admin listener and the heartbeat socket, and runs
// the node in the background until ctx ends, Stop is called or the node
// leaves. parts run on every incarnation after the built-in ones (see
// Part). A start that fails leaves nothing behind.
func Start(ctx context.Context, cfg cluster.Config, parts ...Part) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = cfg.NewLogger(os.Stderr)
		cfg.Logger = log
	}
	// A leg that cannot be opened at all is a configuration error: say
	// so before anything is created, rather than retrying incarnations.
	withPR, err := checkLegs(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cn, err := cluster.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, cn: cn, extra: parts, done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			if n.det != nil {
				n.det.close()
			}
			cn.Close()
		}
	}()
	n.locks = newLockService(cn)
	n.vols = newVolumeService(cn)
	n.role = newRecoveryRole(cn, n.vols, n.locks)
	n.role.replayers = n.replayers
	n.role.replayWaiters = n.replayWaiters
	cn.Watcher().Subscribe(n.role.observe)
	if n.det, err = newDetectService(cn, n.role, withPR); err != nil {
		return nil, err
	}
	if cfg.Admin.Addr != "off" {
		if n.admin, err = cluster.NewAdminServer(cn); err != nil {
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		if n.role.metrics, err = recovery.NewMetrics(n.admin.Registry()); err != nil {
			return nil, err
		}
		if n.role.fenceMetrics, err = fencing.NewMetrics(n.admin.Registry()); err != nil {
			return nil, err
		}
		if err := n.role.registerClusterMetrics(n.admin.Registry()); err != nil {
			return nil, err
		}
		if n.locks.onAcquire, err = newLockWaitMetric(n.admin.Registry()); err != nil {
			return nil, err
		}
		var traffic TrafficReporter
		for _, p := range parts {
			if tr, ok := p.(TrafficReporter); ok {
				if err := tr.Register(n.admin.Registry()); err != nil {
					return nil, err
				}
				traffic = tr
			}
		}
		if n.ui, err = newDashboard(cn, n.locks, n.vols, traffic); err != nil {
			return nil, err
		}
		n.admin.Handle("GET /ui/", n.ui)
		n.locks.routes(n.admin)
		n.admin.Handle("GET /api/recoveries", http.HandlerFunc(n.role.handleRecoveries))
		n.vols.routes(n.admin, cfg.Admin.Debug)
		for _, p := range parts {
			if m, ok := p.(Mounter); ok {
				m.Mount(n.admin)
			}
		}
	}
	// Every node tells every failover in its log, whoever coordinates.
	var onDone func(recovery.Record, time.Duration)
	if n.role.metrics != nil {
		onDone = n.role.metrics.ObserveFailover
	}
	n.story = recovery.NewStory(log, onDone)
	cn.Watcher().Subscribe(suspectOnDeath(n.story))
	runCtx, cancel := context.WithCancel(ctx)
	n.cancel = cancel
	ok = true
	go n.run(runCtx)
	return n, nil
}

// parts are the pieces that live on each incarnation, in start order:
// the lock manager, the volume under its locks, the failure detector.
// They stop in the reverse order.
func (n *Node) parts() cluster.Parts {
	log := n.cfg.Logger
	p := cluster.Parts{Role: n.role}
	if n.det != nil {
		p.Describe = n.det.describe
	}
	p.OnSession = func(ctx context.Context, s *cluster.Session) {
		for _, old := range s.Replaced() {
			// This incarnation revoked its predecessor's lease to take
			// the name over. When every node restarted at once, no member
			// view may have held the predecessor, so no one saw it go
			// down; left unrecovered, its orphan locks would stand in the
			// way of this incarnation's own volume and store for ever.
			// Asked for as long as this incarnation lives: the whole
			// cluster may still be gathering its etcd quorum.
			rctx, cancel := context.WithCancel(ctx)
			n.role.requestWithin(rctx, cancel, fencing.NewNodeRef(old.Name, old.Incarnation, old.Lease))
		}
		// A part that could not start ends the incarnation, unless the
		// node is stopping: then the clean stop revokes the lease.
		abandon := func(err error) {
			if ctx.Err() == nil {
				s.Abandon(err)
			}
		}
		d := n.locks.start(ctx, s)
		if d == nil {
			abandon(errors.New("lock manager did not start"))
			return
		}
		if err := n.vols.start(ctx, s, d); err != nil {
			log.Error("volume did not open; abandoning this incarnation", "error", err)
			abandon(err)
			return
		}
		if n.det != nil {
			if err := n.det.start(s); err != nil {
				log.Error("failure detector did not start", "error", err)
			}
		}
		inc := n.incarnation(s, d)
		for i, part := range n.extra {
			pctx, cancel := context.WithTimeout(ctx, n.cfg.StartTimeout())
			err := part.Start(pctx, inc)
			cancel()
			if err != nil {
				log.Error("part did not start; abandoning this incarnation", "part", part.Name(), "error", err)
				for j := i - 1; j >= 0; j-- {
					n.extra[j].Stop(false)
				}
				n.started = 0
				abandon(err)
				return
			}
			n.started = i + 1
		}
	}
	p.OnSessionEnd = func(s *cluster.Session, clean bool) bool {
		revoke := true
		for j := n.started - 1; j >= 0; j-- {
			part := n.extra[j]
			part.Stop(clean)
			if u, ok := part.(Unfinished); ok && clean {
				if err := u.LeftUnfinished(); err != nil {
					// The rest stops as after a lost lease: nothing is
					// handed on, the lease expires, the others recover.
					log.Error("part left work only a recovery can finish: this incarnation ends as a failed one", "part", part.Name(), "error", err)
					clean, revoke = false, false
				}
			}
		}
		n.started = 0
		if n.det != nil {
			n.det.stop()
		}
		n.vols.stop(clean)
		if err := n.locks.stop(s, clean); err != nil {
			// Departing now would leave the requests as orphans of a
			// member the others saw leave, which nobody recovers: the
			// node's next incarnation would wait behind them for ever.
			log.Error("lock requests not withdrawn: this incarnation ends as a failed one, so that the cluster recovers it and releases them", "error", err)
			revoke = false
		}
		return revoke
	}
	return p
}

func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	log := n.cfg.Logger
	adminDone := make(chan error, 1)
	if n.admin != nil {
		go func() { adminDone <- n.admin.Serve(ctx) }()
		log.Info("admin listening", "url", n.admin.URL())
	}
	var ops sync.WaitGroup
	var changed func()
	if n.ui != nil {
		changed = n.ui.Wake
		n.cn.Watcher().Subscribe(func(cluster.Event) { n.ui.Wake() })
		ops.Go(func() { n.ui.Run(ctx) })
	}
	ops.Go(func() { followRecoveries(ctx, n.cn, n.story, changed) })
	err := n.cn.Run(ctx, n.parts())
	n.cancel()
	ops.Wait()
	if n.admin != nil {
		if aerr := <-adminDone; aerr != nil && err == nil {
			err = fmt.Errorf("admin listener: %w", aerr)
		}
	}
	if n.det != nil {
		n.det.close()
	}
	n.cn.Close()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err == nil {
		log.Info("stopped")
	}
	n.err = err
}

// Wait blocks until the node has stopped and returns why (nil for a clean
// stop or a departure).
func (n *Node) Wait() error {
	<-n.done
	return n.err
}

// Done is closed when the node has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// Stop stops the node cleanly (the incarnation's parts let go, the lease
// revoked) and waits at most StopTimeout; it reports
// context.DeadlineExceeded if the node had not stopped by then.
func (n *Node) Stop() error {
	n.cancel()
	select {
	case <-n.done:
		return n.err
	case <-time.After(StopTimeout):
		return fmt.Errorf("node %s did not stop within %s: %w", n.cfg.NodeName, StopTimeout, context.DeadlineExceeded)
	}
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// Cluster is the node's membership: its etcd client, member view, session.
func (n *Node) Cluster() *cluster.Node { return n.cn }

// AdminAddr is the admin listener's host:port, or "" when it is off.
func (n *Node) AdminAddr() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.Addr()
}

// HeartbeatAddr is the failure detector's UDP host:port, or "" when the
// detector does not run.
func (n *Node) HeartbeatAddr() string {
	if n.det == nil {
		return ""
	}
	return n.det.addr
}

// Locks waits (bounded by ctx) for the lock manager of the current
// incarnation.
func (n *Node) Locks(ctx context.Context) (*dlm.Node, error) { return n.locks.current(ctx) }

// Volume is the volume of the current incarnation; ErrNoVolume when there
// is none.
func (n *Node) Volume() (*mirror.Volume, error) {
	vi, err := n.vols.current()
	if err != nil {
		return nil, err
	}
	return vi.vol, nil
}

// incarnation is what parts see of incarnation s with lock manager d.
func (n *Node) incarnation(s *cluster.Session, d *dlm.Node) Incarnation {
	inc := Incarnation{Session: s, Locks: d}
	if vi, err := n.vols.current(); err == nil {
		inc.Volume = vi.vol
	}
	return inc
}

// replayers returns the parts with a journal, and the current
// incarnation for them to replay with.
func (n *Node) replayers(ctx context.Context) ([]Replayer, Incarnation, error) {
	var rs []Replayer
	for _, p := range n.extra {
		if r, ok := p.(Replayer); ok {
			rs = append(rs, r)
		}
	}
	if len(rs) == 0 {
		return nil, Incarnation{}, nil
	}
	d, err := n.locks.current(ctx)
	if err != nil {
		return nil, Incarnation{}, err
	}
	s := n.cn.Session()
	if s == nil {
		return nil, Incarnation{}, errors.New("no registered incarnation")
	}
	// A node with a volume replays with it: while this incarnation's
	// volume is still opening (its open recovers its own bitmap slot
	// first), the parts would see no volume and take the victim's
	// journal for one that is not there.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n.vols.enabled() {
		if _, err := n.vols.current(); err == nil {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return nil, Incarnation{}, fmt.Errorf("this incarnation's volume is not open yet: %w", ctx.Err())
		}
	}
	return rs, n.incarnation(s, d), nil
}

// replayWaiters returns the parts that say what their replay waits for.
func (n *Node) replayWaiters() []ReplayWaiter {
	var ws []ReplayWaiter
	for _, p := range n.extra {
		if w, ok := p.(ReplayWaiter); ok {
			ws = append(ws, w)
		}
	}
	return ws
}

// IsCoordinator reports whether this node coordinates recovery now.
func (n *Node) IsCoordinator() bool { return n.cn.IsCoordinator() }

// checkLegs opens and closes every configured leg once, and counts the
// legs with the persistent-reservation ability.
func checkLegs(ctx context.Context, cfg cluster.Config) (withPR int, err error) {
	for _, addr := range cfg.Volume.Legs {
		octx, cancel := context.WithTimeout(ctx, cfg.StartTimeout())
		dev, err := blockdev.Open(octx, addr, blockdev.OpenOptions{Logger: cfg.Logger.Named("leg")})
		cancel()
		if err != nil {
			return 0, fmt.Errorf("volume.legs: cannot open %s: %w", addr, err)
		}
		withPR += len(fencing.LegsOf([]string{addr}, []blockdev.Device{dev}))
		dev.Close()
	}
	return withPR, nil
}

// listenUDP binds the heartbeat socket once for the node's life.
func listenUDP(addr string) (*net.UDPConn, error) {
	la, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", la)
}
