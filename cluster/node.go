package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/keys"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/adminauth"
)

// Node is a running shoald: its etcd member (or external etcd client), its
// registered incarnation, the member view and the coordinator campaign.
type Node struct {
	cfg    Config
	log    hclog.Logger
	clk    clock.Clock
	dir    *dataDir
	certs  CertFiles
	member *etcdMember
	cli    *clientv3.Client

	watcher *Watcher
	events  *eventRing
	metrics *metrics

	// parts is what Run was given; role is read by IsCoordinator.
	parts Parts

	mu          sync.Mutex
	sess        *Session
	leaseLosses int
	leaving     chan struct{}
	leaveOnce   sync.Once
	leave       leaveLog
}

// Start opens the data directory, sets up TLS, starts or connects to etcd
// and waits until etcd serves. A start that fails removes what it created.
// cfg must have passed Validate.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = cfg.NewLogger(os.Stderr)
	}
	dir, err := openDataDir(cfg.DataDir, cfg.Cluster(), cfg.NodeName)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, clk: clock.Real(), dir: dir, events: newEventRing(64), leaving: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
			dir.undo()
		}
	}()
	if n.certs, err = n.setupTLS(); err != nil {
		return nil, err
	}
	tlsCfg, err := ClientTLS(n.certs)
	if err != nil {
		return nil, err
	}
	var endpoints []string
	if cfg.EtcdMode() == EtcdEmbedded {
		if n.member, err = startEmbedded(ctx, &n.cfg, n.certs, dir, log); err != nil {
			return nil, err
		}
		// Only the local member: it lives and dies with this node, and a
		// paused or partitioned peer can never hold up this node's
		// watches or renewals (the member forwards to the leader).
		endpoints = []string{"https://" + cfg.Etcd.ClientAddr}
	} else {
		endpoints = cfg.Etcd.Endpoints
	}
	if n.cli, err = newClient(endpoints, tlsCfg, cfg.RequestTimeout(), cfg.Etcd.Dial); err != nil {
		return nil, err
	}
	if cfg.EtcdMode() == EtcdExternal {
		rctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout())
		_, err := n.cli.Get(rctx, keys.Of(cfg.Prefix()).Probe())
		cancel()
		if err != nil {
			return nil, fmt.Errorf("external etcd %v: %w", endpoints, err)
		}
	}
	n.watcher = NewWatcher(n.cli, cfg.Prefix(), log.Named("members"))
	n.watcher.Subscribe(n.events.add)
	n.metrics = newMetrics(n)
	ok = true
	dir.commit()
	return n, nil
}

func (n *Node) setupTLS() (CertFiles, error) {
	t := n.cfg.TLS
	autoDir := n.cfg.TLSAutoDir()
	if autoDir == "" {
		return CertFiles{CA: t.CAFile, Cert: t.CertFile, Key: t.KeyFile}, nil
	}
	if _, err := os.Stat(autoDir); errors.Is(err, os.ErrNotExist) {
		n.dir.track(autoDir)
	}
	if err := EnsureLocalCA(autoDir); err != nil {
		return CertFiles{}, err
	}
	hosts := []string{"localhost", "127.0.0.1"}
	for _, a := range []string{n.cfg.Etcd.ClientAddr, n.cfg.Etcd.PeerAddr, n.cfg.Admin.Addr} {
		if h, _, err := net.SplitHostPort(a); err == nil {
			hosts = append(hosts, h)
		}
	}
	certDir := filepath.Join(n.cfg.DataDir, "certs")
	if _, err := os.Stat(certDir); errors.Is(err, os.ErrNotExist) {
		n.dir.track(certDir)
	}
	return IssueCert(autoDir, certDir, n.cfg.NodeName, hosts)
}

// Client is the node's etcd client.
func (n *Node) Client() *clientv3.Client { return n.cli }

// LeaderChanges returns a channel closed when the node's embedded etcd
// member next learns of a new leader (an attempt.LeaderChanges): a write
// the member forwarded to a leader that died is never answered, and can be
// sent again at once then. Nil for a client of an external etcd cluster,
// whose requests only end at their bounds.
func (n *Node) LeaderChanges() <-chan struct{} {
	if n.member == nil {
		return nil
	}
	return n.member.e.Server.LeaderChangedNotify()
}

// Config is the node's validated configuration.
func (n *Node) Config() Config { return n.cfg }

// Certs are the node's TLS files.
func (n *Node) Certs() CertFiles { return n.certs }

// Logger is the node's logger.
func (n *Node) Logger() hclog.Logger { return n.log }

// Watcher is the node's member view.
func (n *Node) Watcher() *Watcher { return n.watcher }

// Session is the current incarnation, or nil between incarnations.
func (n *Node) Session() *Session {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sess
}

// Ready reports whether the node is a registered member with a lease it
// may trust.
func (n *Node) Ready() bool {
	s := n.Session()
	return s != nil && s.Valid()
}

// Leave asks Run to leave the cluster for good: resign, revoke the lease,
// remove the etcd member and its data. Refused for the last member.
func (n *Node) Leave() { n.leaveOnce.Do(func() { close(n.leaving) }) }

// Parts are what a node runs on top of its membership, handed to Run:
// the recovery coordinator role and the per-incarnation start and stop of
// the parts that live on an incarnation's lease (lock manager, volume,
// failure detector). Every field may be nil.
type Parts struct {
	// Role is the recovery coordinator role the node campaigns for with
	// each incarnation.
	Role CoordinatorRole
	// Describe adds to the member record each incarnation registers (the
	// addresses of the parts the node runs).
	Describe func(*keys.MemberRecord)
	// OnSession is called with every new incarnation the node registers
	// (the first and each one after a lost lease), before the campaign.
	// ctx ends when the node stops or the incarnation is lost, so a part
	// that waits for etcd while starting does not hold the node up.
	OnSession func(ctx context.Context, s *Session)
	// OnSessionEnd is called when an incarnation ends: after its lease
	// was lost or at a stop without etcd quorum (clean false: let go at
	// once, hand nothing on through etcd), or before a clean shutdown
	// revokes the lease (clean true), so the parts built on it can let go
	// of what they hold while the lease still stands. It returns whether
	// the lease may be revoked: false when a part left work or state only
	// a recovery of the incarnation can finish (unfinished writes, lock
	// requests it could not withdraw); the lease is then left to expire
	// and the others fence and recover the incarnation.
	OnSessionEnd func(s *Session, clean bool) (revoke bool)
}

// Run registers the node, follows the members, runs p on each
// incarnation, campaigns for coordinator and registers again as a new
// incarnation whenever the lease is lost, until ctx ends (clean stop) or
// Leave is called. Call it once.
func (n *Node) Run(ctx context.Context, p Parts) error {
	n.mu.Lock()
	n.parts = p
	n.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); n.watcher.Run(ctx) }()
	defer wg.Wait()

	var memberErr <-chan error
	if n.member != nil {
		memberErr = n.member.e.Err()
	}
	leave := false
	var runErr error
	backoff := 100 * time.Millisecond
	// An incarnation that ends soon after it began (its volume would not
	// open, say) is followed by the next one only after a growing pause,
	// so a lasting fault cannot spin registrations.
	const shortLived = 5 * time.Second
	lostBackoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		sess, err := n.register(ctx, p.Describe)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			n.log.Warn("registration failed; retrying", "error", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			if backoff < 2*time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 100 * time.Millisecond
		registeredAt := time.Now()
		n.mu.Lock()
		n.sess = sess
		n.mu.Unlock()
		// The campaign starts before the parts: a part's start may wait
		// for a recovery (the volume's own slot, locked by the previous
		// incarnation), and every node may be in that start at once.
		cctx, ccancel := context.WithCancel(ctx)
		cdone := make(chan struct{})
		go func() {
			defer close(cdone)
			if p.Role != nil {
				campaignWhileValid(cctx, p.Role, sess, sess.Lost(), n.clk, n.log)
			}
		}()
		if p.OnSession != nil {
			octx, ocancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-sess.Lost():
					ocancel()
				case <-octx.Done():
				}
			}()
			p.OnSession(octx, sess)
			ocancel()
		}
		select {
		case <-sess.Lost():
			ccancel()
			<-cdone
			if p.OnSessionEnd != nil {
				p.OnSessionEnd(sess, false)
			}
			n.mu.Lock()
			n.leaseLosses++
			n.sess = nil
			n.mu.Unlock()
			n.metrics.leaseLosses.Inc()
			wait := time.Duration(0)
			if time.Since(registeredAt) < shortLived {
				wait = lostBackoff
				if lostBackoff < shortLived {
					lostBackoff *= 2
				}
			} else {
				lostBackoff = 200 * time.Millisecond
			}
			n.log.Warn("registering again as a new incarnation", "old_incarnation", sess.Incarnation(), "why", sess.Err(), "in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		case <-n.leaving:
			leave = true
			n.leave.step(n, "resigning the coordinator role and stopping the node's parts")
		case err := <-memberErr:
			n.log.Error("etcd member stopped", "error", err)
			runErr = fmt.Errorf("etcd member stopped: %w", err)
		case <-ctx.Done():
		}
		// A clean stop hands on what it holds through etcd; without a
		// quorum nothing can be handed on, and waiting for it would hold
		// the stop up for as long as the partition lasts.
		quorum := n.hasQuorum()
		if !quorum {
			n.log.Warn("stopping without etcd quorum: giving up the coordinator role, locks and lease without handing them on; the cluster recovers this incarnation once it has a quorum, and the volume keeps every acknowledged write",
				"incarnation", sess.Incarnation())
		}
		ccancel()
		<-cdone
		if p.OnSessionEnd != nil && !p.OnSessionEnd(sess, quorum) && quorum {
			n.log.Error("this incarnation left work or locks only its recovery can finish: leaving the lease to expire instead of revoking it, so that the cluster fences and recovers it", "incarnation", sess.Incarnation())
			quorum = false
		}
		// The quorum may have gone while the parts stopped (every node
		// of the cluster stopping at once): a member that no longer
		// knows a leader does not wait out a revoke that cannot succeed.
		if quorum && n.member != nil && n.member.e.Server.Leader() == 0 {
			n.log.Warn("etcd lost its quorum while this node stopped: leaving the lease to expire instead of revoking it", "incarnation", sess.Incarnation())
			quorum = false
		}
		tctx, c1 := context.WithTimeout(context.Background(), n.cfg.RequestTimeout())
		cctx2, c2 := n.WhileQuorum(tctx)
		if err := sess.Close(cctx2, quorum); err != nil {
			n.log.Warn("revoking lease on shutdown failed", "error", err)
		}
		c2()
		c1()
		n.mu.Lock()
		n.sess = nil
		n.mu.Unlock()
		if leave {
			n.leave.step(n, "lease revoked: the others see a departure, not a death")
		}
		break
	}
	cancel()
	if leave {
		err := n.removeMember()
		if err != nil {
			n.leave.step(n, "failed: "+err.Error())
		}
		return err
	}
	return runErr
}

func (n *Node) register(ctx context.Context, describe func(*keys.MemberRecord)) (*Session, error) {
	info := keys.MemberRecord{Name: n.cfg.NodeName, Kind: keys.KindNode}
	if n.cfg.EtcdMode() == EtcdEmbedded {
		info.ClientURL = "https://" + n.cfg.Etcd.ClientAddr
		info.PeerURL = "https://" + n.cfg.Etcd.PeerAddr
	}
	if n.cfg.Admin.Addr != "off" {
		info.AdminURL = (&url.URL{Scheme: "https", Host: n.cfg.Admin.Addr}).String()
	}
	if describe != nil {
		describe(&info)
	}
	rctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout())
	defer cancel()
	return Register(rctx, SessionConfig{
		Client: n.cli, Prefix: n.cfg.Prefix(), Info: info,
		TTL: n.cfg.LeaseTTL(), KeepAliveInterval: n.cfg.KeepAliveInterval(),
		KeepAliveTimeout: n.cfg.KeepAliveTimeout(), SelfFenceMargin: n.cfg.SelfFenceMargin(),
		// The data directory's lock proves an older shoald of this
		// directory is dead, so its lease may be revoked at once.
		TakeOver:     true,
		TimingAdvice: n.cfg.leaseAdvice(),
		Clock:        n.clk, Logger: n.log.Named("lease"),
	})
}

// hasQuorum reports whether etcd can serve a linearizable read now: the
// embedded member knows a leader and a read answers within twice the
// election timeout (at most the request timeout).
func (n *Node) hasQuorum() bool {
	if n.member != nil && n.member.e.Server.Leader() == 0 {
		return false
	}
	wait := min(2*n.cfg.ElectionTimeout(), n.cfg.RequestTimeout())
	if n.cfg.Etcd.Mode != EtcdEmbedded {
		wait = n.cfg.RequestTimeout()
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := n.cli.Get(ctx, keys.Of(n.cfg.Prefix()).Members(), clientv3.WithCountOnly())
	return err == nil
}

// WhileQuorum returns a context that ends with parent or as soon as this
// node's embedded etcd member knows no leader (checked every 50 ms), for
// the etcd writes of a clean stop: when the whole cluster stops at once,
// the last nodes lose the quorum halfway through their stop, and a write
// that cannot be committed need not wait out its timeout. With an
// external etcd it is parent's.
func (n *Node) WhileQuorum(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	if n.member == nil {
		return ctx, cancel
	}
	srv := n.member.e.Server
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if srv.Leader() == 0 {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

// ErrLastMember: the only member of a cluster cannot leave it.
var ErrLastMember = errors.New("cannot leave: this is the cluster's only etcd member")

// removeMember removes this node's etcd member through the others and
// deletes its member data, so the node can later join afresh.
func (n *Node) removeMember() error {
	if n.member == nil {
		n.log.Info("left the cluster (external etcd: no member to remove)")
		n.leave.step(n, "left the cluster (external etcd: no member to remove); deleting the member's files and exiting")
		n.leave.mu.Lock()
		n.leave.left = true
		n.leave.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.StartTimeout())
	defer cancel()
	id := uint64(n.member.e.Server.MemberID())
	resp, err := n.cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if len(resp.Members) <= 1 {
		return ErrLastMember
	}
	var others []string
	for _, m := range resp.Members {
		if m.ID != id {
			others = append(others, m.ClientURLs...)
		}
	}
	n.cli.SetEndpoints(others...)
	if _, err := n.cli.MemberRemove(ctx, id); err != nil {
		return fmt.Errorf("leave: member remove: %w", err)
	}
	n.log.Info("removed etcd member; left the cluster", "id", fmt.Sprintf("%x", id))
	n.leave.step(n, fmt.Sprintf("etcd member %x removed", id))
	n.member.close()
	n.member = nil
	if err := os.RemoveAll(filepath.Join(n.cfg.DataDir, "etcd")); err != nil {
		return fmt.Errorf("leave: remove member data: %w", err)
	}
	n.leave.mu.Lock()
	n.leave.left = true
	n.leave.mu.Unlock()
	n.leave.step(n, "etcd member data deleted; deleting the member's files (certs/, "+identityFile+", "+adminauth.TokenFile+", .lock) and exiting")
	return nil
}

// Close stops the client and the etcd member and unlocks the data
// directory. Call after Run has returned.
func (n *Node) Close() {
	n.closeAll()
	n.dir.close()
	n.leave.mu.Lock()
	left := n.leave.left
	n.leave.mu.Unlock()
	if left {
		n.deleteMemberFiles()
	}
}

func (n *Node) closeAll() {
	if n.cli != nil {
		n.cli.Close()
		n.cli = nil
	}
	if n.member != nil {
		n.member.close()
		n.member = nil
	}
}

// LeaseLosses counts the incarnations this process lost.
func (n *Node) LeaseLosses() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leaseLosses
}

// IsCoordinator reports whether this node holds the coordinator role.
func (n *Node) IsCoordinator() bool {
	n.mu.Lock()
	role := n.parts.Role
	n.mu.Unlock()
	return role != nil && role.Leading() && n.Ready()
}

// CoordinatorRole is the recovery coordinator: every node campaigns for it
// with each incarnation, and the elected one recovers dead nodes.
type CoordinatorRole interface {
	// Run campaigns on behalf of sess and, while elected, coordinates,
	// until ctx ends or the session is lost. The node calls it again after
	// any other end while sess is valid; Run must leave no election key
	// of its own behind when it returns.
	Run(ctx context.Context, sess *Session) error
	// Leading reports whether this node holds the role now.
	Leading() bool
}

// campaignWhileValid runs role for sess and runs it again after every end
// (an etcd error, a lost election key, a fenced coordinator) until ctx ends
// or the lease is lost: while a node holds a valid lease it is always a
// candidate, so a quorum always has a coordinator. Runs that end soon after
// they began are retried after a pause growing from 200ms to 2s.
func campaignWhileValid(ctx context.Context, role CoordinatorRole, sess *Session, lost <-chan struct{}, clk clock.Clock, log hclog.Logger) {
	const minRun, maxWait = 5 * time.Second, 2 * time.Second
	wait := 200 * time.Millisecond
	for {
		began := clk.Now()
		err := role.Run(ctx, sess)
		if ctx.Err() != nil {
			return
		}
		select {
		case <-lost:
			log.Warn("coordinator campaign ended with the lease", "error", err)
			return
		default:
		}
		if clk.Since(began) >= minRun {
			wait = 200 * time.Millisecond
		}
		log.Warn("coordinator campaign ended; campaigning again", "error", err, "in", wait)
		t := clk.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-lost:
		case <-t.C():
		}
		t.Stop()
		if wait *= 2; wait > maxWait {
			wait = maxWait
		}
	}
}

// CoordinatorName returns the node name of the current coordinator, or ""
// when there is none. The election value is "name" or "name/incarnation".
func CoordinatorName(ctx context.Context, cli *clientv3.Client, prefix string) (string, error) {
	resp, err := cli.Get(ctx, keys.Of(prefix).Coordinator()+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	name, _, _ := strings.Cut(string(resp.Kvs[0].Value), "/")
	return name, nil
}
