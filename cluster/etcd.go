package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/etcdprobe"
	"github.com/shoal-ha/shoal/internal/zaphclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ErrNoQuorum: the embedded member could not join a quorum in time (peers
// unreachable, or too few of them up). Retriable once peers are up.
var ErrNoQuorum = errors.New("etcd member could not reach a quorum")

// etcdMember is the embedded etcd member, when the node runs one.
type etcdMember struct {
	e     *embed.Etcd
	dir   string
	quiet *atomic.Bool
	// election is the raft election timeout.
	election time.Duration
}

// startEmbedded starts this node's etcd member and waits for it to serve.
// A member whose data directory is new bootstraps from InitialCluster, or
// adds itself to the running cluster at Join.
func startEmbedded(ctx context.Context, cfg *Config, certs CertFiles, dd *dataDir, log hclog.Logger) (*etcdMember, error) {
	dir := filepath.Join(cfg.DataDir, "etcd")
	fresh := true
	if _, err := os.Stat(filepath.Join(dir, "member")); err == nil {
		fresh = false
	}
	ec := embed.NewConfig()
	ec.Name = cfg.NodeName
	ec.Dir = dir
	ec.TickMs = uint(cfg.HeartbeatInterval() / time.Millisecond)
	ec.ElectionMs = uint(cfg.ElectionTimeout() / time.Millisecond)
	ec.InitialClusterToken = cfg.Cluster()
	peerURL := url.URL{Scheme: "https", Host: cfg.Etcd.PeerAddr}
	clientURL := url.URL{Scheme: "https", Host: cfg.Etcd.ClientAddr}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.SocketOpts.ReusePort = cfg.ReusePort
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	tlsInfo := transport.TLSInfo{
		CertFile:       certs.Cert,
		KeyFile:        certs.Key,
		TrustedCAFile:  certs.CA,
		ClientCertAuth: true,
	}
	ec.ClientTLSInfo = tlsInfo
	ec.PeerTLSInfo = tlsInfo
	quiet := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zaphclog.NewLogger(log.Named("etcd"), hclog.Warn, quiet))
	var server atomic.Pointer[etcdserver.EtcdServer]
	ec.GRPCAdditionalServerOptions = []grpc.ServerOption{grpc.ChainUnaryInterceptor(statusWhileStopping(serverStopping(server.Load)))}
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "5m"

	switch {
	case !fresh:
		// The member's own data decides; the initial cluster is ignored.
		ec.ClusterState = embed.ClusterStateFlagExisting
		ec.InitialCluster = fmt.Sprintf("%s=%s", cfg.NodeName, peerURL.String())
	case cfg.Etcd.Join != "":
		initial, err := addSelfAsMember(ctx, cfg, certs, peerURL.String(), log)
		if err != nil {
			return nil, err
		}
		ec.ClusterState = embed.ClusterStateFlagExisting
		ec.InitialCluster = initial
	case cfg.Etcd.InitialCluster != "":
		ec.ClusterState = embed.ClusterStateFlagNew
		ec.InitialCluster = cfg.Etcd.InitialCluster
	default:
		ec.ClusterState = embed.ClusterStateFlagNew
		ec.InitialCluster = fmt.Sprintf("%s=%s", cfg.NodeName, peerURL.String())
	}
	if fresh {
		dd.track(dir)
	}
	// A port in use is the commonest start failure; etcd's own error
	// names the address ("listen tcp 127.0.0.1:2380: bind: address
	// already in use").
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcd: start member (client %s, peer %s): %w", cfg.Etcd.ClientAddr, cfg.Etcd.PeerAddr, err)
	}
	server.Store(e.Server)
	t := time.NewTimer(cfg.StartTimeout())
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: member failed: %w", err)
	case <-t.C:
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("%w within %s (initial cluster %s): are the other members started and reachable?", ErrNoQuorum, cfg.StartTimeout(), ec.InitialCluster)
	case <-ctx.Done():
		e.Server.Stop()
		e.Close()
		return nil, ctx.Err()
	}
	log.Info("etcd member ready", "client", clientURL.String(), "peer", peerURL.String(), "id", fmt.Sprintf("%x", uint64(e.Server.MemberID())), "state", ec.ClusterState)
	return &etcdMember{e: e, dir: dir, quiet: quiet, election: cfg.ElectionTimeout()}, nil
}

// addSelfAsMember asks the running cluster at cfg.Etcd.Join to add this
// node, and returns the initial-cluster string for the new member.
func addSelfAsMember(ctx context.Context, cfg *Config, certs CertFiles, peerURL string, log hclog.Logger) (string, error) {
	tlsCfg, err := ClientTLS(certs)
	if err != nil {
		return "", err
	}
	var eps []string
	for _, ep := range strings.Split(cfg.Etcd.Join, ",") {
		eps = append(eps, strings.TrimSpace(ep))
	}
	// A certificate the cluster refuses (or a CA that does not sign the
	// cluster's) is said at once, not after the start timeout.
	if err := etcdprobe.Check(ctx, eps, tlsCfg); errors.Is(err, etcdprobe.ErrTLS) {
		return "", fmt.Errorf("join %s: %w (does tls.auto_dir or tls.ca_file name the cluster's CA?)", cfg.Etcd.Join, err)
	}
	cli, err := newClient(eps, tlsCfg, cfg.RequestTimeout(), cfg.Etcd.Dial)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout())
	defer cancel()
	list, err := cli.MemberList(rctx)
	if err != nil {
		return "", fmt.Errorf("join %s: %w", cfg.Etcd.Join, err)
	}
	for _, m := range list.Members {
		if m.Name == cfg.NodeName || containsString(m.PeerURLs, peerURL) {
			return "", fmt.Errorf("join: the cluster already has a member named %q or at %s; remove it first (shoald leave)", cfg.NodeName, peerURL)
		}
	}
	// etcd refuses to add a voting member until every current member has
	// been connected to the leader for a while (a young cluster answers
	// "unhealthy cluster"): retry that until the start timeout.
	var resp *clientv3.MemberAddResponse
	for {
		resp, err = cli.MemberAdd(rctx, []string{peerURL})
		if err == nil {
			break
		}
		if !errors.Is(err, rpctypes.ErrUnhealthy) || rctx.Err() != nil {
			return "", fmt.Errorf("join: member add: %w", err)
		}
		log.Info("cluster not ready to add a member yet; retrying", "error", err)
		select {
		case <-rctx.Done():
			return "", fmt.Errorf("join: member add: %w", err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	var parts []string
	for _, m := range resp.Members {
		name := m.Name
		if m.ID == resp.Member.ID {
			name = cfg.NodeName
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	sort.Strings(parts)
	log.Info("added as etcd member", "id", fmt.Sprintf("%x", resp.Member.ID), "cluster", strings.Join(parts, ","))
	return strings.Join(parts, ","), nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// newClient connects an etcd client with mutual TLS.
func newClient(endpoints []string, tlsCfg *tls.Config, timeout time.Duration, dial func(context.Context, string) (net.Conn, error)) (*clientv3.Client, error) {
	// gRPC's default reconnect back-off grows to 120 s (1.6x from 1 s):
	// after an outage of a few seconds that cut every node off (etcd
	// without quorum, or the node's own link), a node would wait up to
	// several seconds more after etcd answers again before it tries, and
	// only then register its new incarnation and recover the others.
	// Retrying a local quorum at most every second costs little.
	connect := timeout
	if connect <= 0 {
		connect = 5 * time.Second
	}
	opts := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: connect,
	})}
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	cli, err := clientv3.New(clientv3.Config{
		DialOptions: opts,
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: timeout,
		// A peer that stops answering without closing the connection (a
		// paused process) is given up on after about two seconds.
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client %v: %w", endpoints, err)
	}
	return cli, nil
}

// close stops the member. A leader first hands its leadership on, as
// etcd's own stop does, but within two election timeouts instead of
// etcd's request timeout (5 s plus two election timeouts): when the whole
// cluster stops at once, the member etcd would pick is stopping too and
// the hand-over could only time out, holding the stop up for seconds.
//
// Only a member still leading after that hand-over is stopped hard before
// its servers close (its peers cannot take over: they are stopping or
// gone, and they elect a leader among themselves without it). A stop that
// handed leadership on goes through etcd's own close, which stops serving
// clients before it stops the server: a server stopped under live client
// servers answers a maintenance Status with a nil-pointer panic that ends
// the process, and the other nodes ask every member for its status.
func (m *etcdMember) close() {
	m.quiet.Store(true)
	srv := m.e.Server
	self := srv.MemberID()
	if srv.Leader() == self {
		ctx, cancel := context.WithTimeout(context.Background(), 2*m.election)
		for _, mem := range srv.Cluster().Members() {
			if mem.ID == self || mem.IsLearner {
				continue
			}
			if srv.MoveLeader(ctx, uint64(self), uint64(mem.ID)) == nil || ctx.Err() != nil {
				break
			}
		}
		cancel()
		if srv.Leader() == self {
			srv.HardStop()
		}
	}
	m.e.Close()
}
