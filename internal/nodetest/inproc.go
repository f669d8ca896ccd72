package nodetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/internal/zaphclog"
	"github.com/shoal-ha/shoal/node"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// ErrCut is what a node's dial or I/O returns while its link is cut
// (Partition, Kill).
var ErrCut = errors.New("nodetest: link cut")

// Link is one node's network path to etcd, the way hashicorp/raft's
// in-memory transport makes partitions testable: every connection of the
// node's etcd client goes through it. Cut closes them all and refuses new
// ones; Hold freezes them (bytes wait, as for a paused peer) until Heal.
type Link struct {
	mu    sync.Mutex
	cut   bool
	held  chan struct{} // closed when traffic may flow; replaced by Hold
	conns map[*linkConn]struct{}
}

func newLink() *Link {
	open := make(chan struct{})
	close(open)
	return &Link{held: open, conns: map[*linkConn]struct{}{}}
}

// Dial opens a connection through the link (cluster.EtcdConfig.Dial).
func (l *Link) Dial(ctx context.Context, addr string) (net.Conn, error) {
	l.mu.Lock()
	cut := l.cut
	l.mu.Unlock()
	if cut {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrCut)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	lc := &linkConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		c.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, ErrCut)
	}
	l.conns[lc] = struct{}{}
	return lc, nil
}

// Cut closes every connection and refuses new ones until Heal.
func (l *Link) Cut() {
	l.mu.Lock()
	l.cut = true
	conns := l.conns
	l.conns = map[*linkConn]struct{}{}
	l.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
}

// Hold freezes the traffic: reads and writes wait until Heal (or the
// connection is closed), as the network looks to a paused process.
func (l *Link) Hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.held:
		l.held = make(chan struct{})
	default:
	}
}

// Heal lets traffic flow again and accepts new connections.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = false
	select {
	case <-l.held:
	default:
		close(l.held)
	}
}

func (l *Link) gate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

type linkConn struct {
	net.Conn
	l      *Link
	closed chan struct{}
	once   sync.Once
}

func (c *linkConn) wait() error {
	select {
	case <-c.l.gate():
		return nil
	case <-c.done():
		return net.ErrClosed
	}
}

func (c *linkConn) done() chan struct{} {
	c.once.Do(func() { c.closed = make(chan struct{}) })
	return c.closed
}

func (c *linkConn) Read(p []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	// Bytes that arrived while the link was held are handed over only
	// once it is healed.
	if werr := c.wait(); werr != nil && err == nil {
		return 0, werr
	}
	return n, err
}

func (c *linkConn) Write(p []byte) (int, error) {
	if err := c.wait(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *linkConn) Close() error {
	d := c.done()
	select {
	case <-d:
	default:
		close(d)
	}
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// TestEtcd is a one-member etcd cluster with mutual TLS on loopback, in
// the test process, listening on ports the kernel picked (port 0).
type TestEtcd struct {
	Endpoint string
	PKI      string
	e        *embed.Etcd
}

// StartTestEtcd starts the member and stops it when t ends.
func StartTestEtcd(t testing.TB) *TestEtcd {
	t.Helper()
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if err := cluster.EnsureLocalCA(pki); err != nil {
		t.Fatal(err)
	}
	srv, err := cluster.IssueCert(pki, filepath.Join(dir, "server"), "etcd", []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcd"
	cfg.Dir = filepath.Join(dir, "data")
	// A one-member cluster never dials its peer URL, and its client URL
	// is read back from the bound listener: both bind port 0.
	u := url.URL{Scheme: "https", Host: "127.0.0.1:0"}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{u}, []url.URL{u}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
	cfg.InitialCluster = "etcd=" + u.String()
	cfg.ListenMetricsUrls = nil
	tls := transport.TLSInfo{CertFile: srv.Cert, KeyFile: srv.Key, TrustedCAFile: srv.CA, ClientCertAuth: true}
	cfg.ClientTLSInfo, cfg.PeerTLSInfo = tls, tls
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zaphclog.NewLogger(testlog.New(t, "etcd"), hclog.Warn, nil))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("test etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("test etcd not ready after 30s")
	}
	return &TestEtcd{Endpoint: "https://" + e.Clients[0].Addr().String(), PKI: pki, e: e}
}

// InProcNode is one node of an in-process cluster.
type InProcNode struct {
	Name string
	// Config is the node's configuration; change it before Start.
	Config cluster.Config
	// Link is the node's path to etcd.
	Link *Link
	// Parts are given to node.Start (set before Start).
	Parts []node.Part
	// LogOutput, when set before Start, receives the node's log lines
	// instead of the test log (for tests that read the log).
	LogOutput io.Writer

	c    *InProcCluster
	mu   sync.Mutex
	node *node.Node
}

// InProcCluster is several nodes in the test process, each a node.Node
// against one test etcd, each behind its own Link.
type InProcCluster struct {
	t     testing.TB
	Etcd  *TestEtcd
	Nodes []*InProcNode
	// Legs are the volume's legs, when the cluster has one.
	Legs []string

	adminOnce sync.Once
	adminTr   *http.Transport
	adminErr  error
}

// InProcOptions shape an in-process cluster.
type InProcOptions struct {
	// FileLegs gives the nodes a volume over two 64 MiB file legs (lease
	// fencing), formatted with 4 slots and 1 MiB regions.
	FileLegs bool
	// NoStart only prepares the nodes.
	NoStart bool
	// Configure, when set, changes each node's configuration before it
	// is validated.
	Configure func(i int, cfg *cluster.Config)
}

// NewInProcCluster prepares n nodes (node1...), starts them and waits
// until each sees all n members. Everything stops when t ends.
func NewInProcCluster(t testing.TB, n int, opts InProcOptions) *InProcCluster {
	t.Helper()
	c := &InProcCluster{t: t, Etcd: StartTestEtcd(t)}
	dir := t.TempDir()
	if opts.FileLegs {
		c.Legs = formatFileLegs(t, dir)
	}
	for i := range n {
		name := fmt.Sprintf("node%d", i+1)
		certs, err := cluster.IssueCert(c.Etcd.PKI, filepath.Join(dir, "certs", name), name, []string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		cfg := cluster.DefaultConfig()
		cfg.NodeName = name
		cfg.DataDir = filepath.Join(dir, name)
		cfg.Profile = cluster.ProfileFast
		// The fast profile with a 3 s lease and 1 s per renewal: a test
		// process runs every node and the etcd member under the race
		// detector, beside other packages' tests on a small machine, and
		// a renewal that misses 500 ms there is not a fault under test.
		cfg.Lease.TTL, cfg.Lease.KeepAliveTimeout = 3*time.Second, time.Second
		cfg.Etcd.Mode = cluster.EtcdExternal
		cfg.Etcd.Endpoints = []string{c.Etcd.Endpoint}
		cfg.TLS = cluster.TLSConfig{CAFile: certs.CA, CertFile: certs.Cert, KeyFile: certs.Key}
		cfg.Admin.Debug = true
		if c.Legs != nil {
			slot := i
			cfg.Volume.Legs = c.Legs
			cfg.Volume.Slot = &slot
		}
		if opts.Configure != nil {
			opts.Configure(i, &cfg)
		}
		c.Nodes = append(c.Nodes, &InProcNode{Name: name, Config: cfg, Link: newLink(), c: c})
	}
	t.Cleanup(c.stopAll)
	if !opts.NoStart {
		for _, nd := range c.Nodes {
			nd.Start()
		}
		c.WaitMembers(30*time.Second, n, c.Nodes...)
	}
	return c
}

func formatFileLegs(t testing.TB, dir string) []string {
	t.Helper()
	ctx := context.Background()
	var legs []string
	var devs []blockdev.Device
	for i := range 2 {
		p := filepath.Join(dir, fmt.Sprintf("leg%d.img", i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		err = f.Truncate(64 << 20)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		d, err := blockdev.Open(ctx, p, blockdev.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		legs, devs = append(legs, p), append(devs, d)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	if _, err := mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: 1 << 20, Slots: 4, ClusterID: "shoal", Addrs: legs, DataIsZero: true}); err != nil {
		t.Fatalf("format: %v", err)
	}
	return legs
}

// AdminClient is an HTTPS client of the nodes' admin APIs with an admin
// certificate from the test etcd's CA, which the nodes' certificates come
// from too.
func (c *InProcCluster) AdminClient(timeout time.Duration) *http.Client {
	c.t.Helper()
	c.adminOnce.Do(func() {
		files, err := cluster.IssueCert(c.Etcd.PKI, filepath.Join(c.t.TempDir(), "admin-client"), "test-admin", []string{"127.0.0.1"})
		if err != nil {
			c.adminErr = err
			return
		}
		tlsCfg, err := cluster.ClientTLS(files)
		c.adminErr = err
		c.adminTr = &http.Transport{TLSClientConfig: tlsCfg}
	})
	if c.adminErr != nil {
		c.t.Fatal(c.adminErr)
	}
	return &http.Client{Timeout: timeout, Transport: c.adminTr}
}

// AdminURL is the running node's admin API base URL.
func (nd *InProcNode) AdminURL() string { return "https://" + nd.Node().AdminAddr() }

// AdminClient is InProcCluster.AdminClient.
func (nd *InProcNode) AdminClient(timeout time.Duration) *http.Client {
	return nd.c.AdminClient(timeout)
}

// Node returns the node called name.
func (c *InProcCluster) Node(name string) *InProcNode {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// Start starts the node: a fresh admin listener bound to port 0 and
// handed over, its etcd traffic through its Link (healed).
func (nd *InProcNode) Start() {
	t := nd.c.t
	t.Helper()
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.node != nil {
		t.Fatalf("%s already running", nd.Name)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := nd.Config
	cfg.Admin.Addr, cfg.Admin.Listener = ln.Addr().String(), ln
	nd.Link.Heal()
	cfg.Etcd.Dial = nd.Link.Dial
	cfg.Logger = testlog.New(t, nd.Name)
	if nd.LogOutput != nil {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: nd.Name, Level: hclog.Debug, Output: nd.LogOutput})
	}
	if err := cfg.Validate(); err != nil {
		ln.Close()
		t.Fatalf("%s: %v", nd.Name, err)
	}
	n, err := node.Start(context.Background(), cfg, nd.Parts...)
	if err != nil {
		ln.Close()
		t.Fatalf("start %s: %v", nd.Name, err)
	}
	nd.node = n
}

// Node is the running node.Node, or nil.
func (nd *InProcNode) Node() *node.Node {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.node
}

// Running reports whether the node runs.
func (nd *InProcNode) Running() bool {
	n := nd.Node()
	if n == nil {
		return false
	}
	select {
	case <-n.Done():
		return false
	default:
		return true
	}
}

// Stop stops the node cleanly (its lease revoked) and returns its error.
func (nd *InProcNode) Stop() error {
	nd.c.t.Helper()
	nd.mu.Lock()
	n := nd.node
	nd.node = nil
	nd.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Stop()
}

// Kill cuts the node off and then stops it: nothing it does on the way
// out (resigning, revoking its lease) reaches etcd, so the others see it
// die when its lease expires, as after SIGKILL.
func (nd *InProcNode) Kill() {
	nd.c.t.Helper()
	nd.Link.Cut()
	if err := nd.Stop(); err != nil && errors.Is(err, context.DeadlineExceeded) {
		nd.c.t.Errorf("%s: %v", nd.Name, err)
	}
}

// Partition cuts the node's etcd traffic (until Heal): it loses its lease
// and self-fences while the others see it die and recover it.
func (nd *InProcNode) Partition() { nd.Link.Cut() }

// Pause freezes the node's etcd traffic (until Heal): what it sends and
// what it is sent wait, and arrive late, as for a paused node.
func (nd *InProcNode) Pause() { nd.Link.Hold() }

// Heal ends a Partition or a Pause.
func (nd *InProcNode) Heal() { nd.Link.Heal() }

// WaitMembers waits until every given running node has a trusted lease
// and sees exactly n live members.
func (c *InProcCluster) WaitMembers(timeout time.Duration, n int, nodes ...*InProcNode) {
	c.t.Helper()
	testutil.WaitFor(c.t, timeout, fmt.Sprintf("%d members seen by every node", n), func() bool {
		for _, nd := range nodes {
			x := nd.Node()
			if x == nil || !x.Cluster().Ready() || len(x.Cluster().Watcher().Members()) != n {
				return false
			}
		}
		return true
	})
}

func (c *InProcCluster) stopAll() {
	var wg sync.WaitGroup
	for _, nd := range c.Nodes {
		nd.Heal()
		wg.Go(func() {
			if err := nd.Stop(); err != nil {
				c.t.Errorf("stopping %s: %v", nd.Name, err)
			}
		})
	}
	wg.Wait()
}

// LoseEveryLease cuts every running node off from etcd at once, waits
// (up to timeout each) until each has lost its incarnation, and heals
// them all: every incarnation of the cluster dies at the same moment, as
// when etcd is unreachable from all nodes. It returns the incarnations
// that died, in node order.
func (c *InProcCluster) LoseEveryLease(timeout time.Duration) []string {
	c.t.Helper()
	olds := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		olds[i] = nd.Node().Cluster().Session().Incarnation()
	}
	for _, nd := range c.Nodes {
		nd.Partition()
	}
	for i, nd := range c.Nodes {
		cn := nd.Node().Cluster()
		testutil.WaitFor(c.t, timeout, nd.Name+" to lose its incarnation", func() bool {
			s := cn.Session()
			return s == nil || s.Incarnation() != olds[i]
		})
	}
	for _, nd := range c.Nodes {
		nd.Heal()
	}
	return olds
}
