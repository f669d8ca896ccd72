// Package etcdtest starts multi-member embedded etcd clusters on loopback
// for tests and benchmarks.
//
//	c := etcdtest.NewCluster(t, 3)
//	cli := c.Client(0) // connected to member 0 only
//	all := c.NewClient(t) // connected to every member
//
// Members listen on 127.0.0.1 with ports picked by the kernel, keep their
// data in temporary directories, run with fast timing (50 ms heartbeat,
// 500 ms election) and are stopped when the test ends.
package etcdtest

import (
	"errors"
	"fmt"
	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/portres"
	"github.com/shoal-ha/shoal/internal/zaphclog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
)

// Options tune a cluster.
type Options struct {
	// HeartbeatMs and ElectionMs are the raft timings (defaults 50, 500).
	HeartbeatMs, ElectionMs uint
	// LogLevel of the embedded servers (default "error").
	LogLevel string
	// Logger receives the servers' log lines at LogLevel and above; nil
	// discards them.
	Logger hclog.Logger
}

// Cluster is a running set of embedded etcd members.
type Cluster struct {
	// Endpoints are the client URLs of the members, in member order.
	Endpoints []string
	// PeerURLs are the members' peer URLs.
	PeerURLs []string
	dirs     []string

	mu      sync.Mutex
	members []*embed.Etcd
	clients []*clientv3.Client
}

// NewCluster starts n members in t's temporary directory and stops them
// when t ends.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := Start(t.TempDir(), n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Start starts n members with data directories under dir.
func Start(dir string, n int, o Options) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("etcdtest: need at least one member, got %d", n)
	}
	if o.HeartbeatMs == 0 {
		o.HeartbeatMs = 50
	}
	if o.ElectionMs == 0 {
		o.ElectionMs = 500
	}
	if o.LogLevel == "" {
		o.LogLevel = "error"
	}
	c := &Cluster{}
	var initial []string
	clientURLs := make([]string, n)
	// The members must know each other's ports before they bind them: the
	// ports are reserved (not found by listening and closing) and held
	// until every member listens on its own.
	var held []*portres.Reservation
	defer func() {
		for _, r := range held {
			r.Release()
		}
	}()
	reserve := func() (int, error) {
		r, err := portres.Reserve("127.0.0.1")
		if err != nil {
			return 0, err
		}
		held = append(held, r)
		return r.Port(), nil
	}
	for i := range n {
		pp, err := reserve()
		if err != nil {
			return nil, err
		}
		cp, err := reserve()
		if err != nil {
			return nil, err
		}
		c.PeerURLs = append(c.PeerURLs, fmt.Sprintf("http://127.0.0.1:%d", pp))
		clientURLs[i] = fmt.Sprintf("http://127.0.0.1:%d", cp)
		initial = append(initial, fmt.Sprintf("m%d=%s", i, c.PeerURLs[i]))
	}
	c.Endpoints = clientURLs
	cfgs := make([]*embed.Config, n)
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = fmt.Sprintf("%s/m%d", dir, i)
		c.dirs = append(c.dirs, cfg.Dir)
		pu, _ := url.Parse(c.PeerURLs[i])
		cu, _ := url.Parse(clientURLs[i])
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "etcdtest"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.TickMs, cfg.ElectionMs = o.HeartbeatMs, o.ElectionMs
		log := o.Logger
		if log == nil {
			log = hclog.NewNullLogger()
		}
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zaphclog.NewLogger(log.Named(cfg.Name), hclog.LevelFromString(o.LogLevel), nil))
		cfg.ListenMetricsUrls = nil
		cfg.SocketOpts.ReusePort = true // binds the reserved ports
		cfgs[i] = cfg
	}
	c.members = make([]*embed.Etcd, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.members[i], errs[i] = embed.StartEtcd(cfgs[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, fmt.Errorf("etcdtest: starting members: %w", err)
	}
	for i, m := range c.members {
		select {
		case <-m.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			c.Close()
			return nil, fmt.Errorf("etcdtest: member %d not ready after 30s", i)
		}
	}
	for i := range n {
		cli, err := c.newClient([]string{clientURLs[i]})
		if err != nil {
			c.Close()
			return nil, err
		}
		c.clients = append(c.clients, cli)
	}
	return c, nil
}

func (c *Cluster) newClient(eps []string, opts ...grpc.DialOption) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, DialOptions: opts})
}

// Client returns a client connected to member i only.
func (c *Cluster) Client(i int) *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clients[i]
}

// NewClient returns a new client to every member, with extra gRPC dial
// options (for example an interceptor that counts requests). It is closed
// when t ends.
func (c *Cluster) NewClient(t testing.TB, opts ...grpc.DialOption) *clientv3.Client {
	t.Helper()
	cli, err := c.NewClientTo(c.Endpoints, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// NewClientTo returns a new client to the given endpoints; the caller
// closes it.
func (c *Cluster) NewClientTo(eps []string, opts ...grpc.DialOption) (*clientv3.Client, error) {
	return c.newClient(eps, opts...)
}

// StopMember stops member i (its data stays), as a crash of that member.
func (c *Cluster) StopMember(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[i]; m != nil {
		m.Close()
		c.members[i] = nil
	}
}

// Close stops every member and client and removes nothing (the data
// directories belong to the caller).
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cli := range c.clients {
		cli.Close()
	}
	c.clients = nil
	for i, m := range c.members {
		if m != nil {
			m.Close()
			c.members[i] = nil
		}
	}
}

// RemoveData deletes the members' data directories (for callers of Start
// that did not use a temporary directory).
func (c *Cluster) RemoveData() error {
	var errs []error
	for _, d := range c.dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}
