// Package nodetest runs real shoald processes for multi-node tests:
// NewCluster(t, 3) builds shoald once, starts three nodes on loopback with
// the fast timing profile and waits until every node sees every other.
// Kill, Pause, Cont, Stop and Start act on one node by PID; Status asks a
// node's admin API. Every wait polls with a deadline.
package nodetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/portres"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binary builds the named command of this module (e.g. "shoald") once per
// test process and returns its path.
func Binary(t testing.TB, name string) string {
	t.Helper()
	return BinaryOf(t, name, "github.com/shoal-ha/shoal/cmd/"+name)
}

// BinaryOf builds the main package pkg as name once per test process.
func BinaryOf(t testing.TB, name, pkg string) string {
	t.Helper()
	out, err := buildBinary(name, pkg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// buildBinary builds pkg as name once per test process and returns its
// path. Different binaries (shoald, shoalblk) build at the same time.
func buildBinary(name, pkg string) (string, error) {
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "shoal-bin-")
	})
	if buildErr != nil {
		return "", buildErr
	}
	out := filepath.Join(buildDir, name)
	binMu.Lock()
	b := builds[name]
	if b == nil {
		b = &build{}
		builds[name] = b
	}
	binMu.Unlock()
	b.once.Do(func() {
		if msg, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %v\n%s", name, err, msg)
		}
	})
	return out, b.err
}

type build struct {
	once sync.Once
	err  error
}

var (
	binMu  sync.Mutex
	builds = map[string]*build{}
)

// Cleanup removes the built binaries; call it from TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// ReservePort reserves a loopback host:port for a shoald process until the
// test ends (portres: bound with SO_REUSEPORT, never listening, so no other
// program can take it and no connection is queued on it). The process
// must be started with --reuse-port (reuse_port = true) to bind it.
func ReservePort(t testing.TB) string {
	t.Helper()
	r, err := portres.Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Release)
	return r.Addr()
}

// Node is one shoald process of a test cluster.
type Node struct {
	Name       string
	DataDir    string
	ClientAddr string
	PeerAddr   string
	AdminAddr  string
	// WebAddr is the web tier's host:port (Options.Web), else empty.
	WebAddr string
	// Args are extra command-line arguments for every start.
	Args []string

	c       *Cluster
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
	logPath string
}

// Cluster is a set of shoald processes sharing a local CA.
type Cluster struct {
	t     testing.TB
	Bin   string
	Dir   string
	PKI   string
	Nodes []*Node
	// ExtraArgs are added to every node's command line.
	ExtraArgs []string
	external  *ExternalEtcd

	adminOnce  sync.Once
	adminCerts cluster.CertFiles
	adminTr    *http.Transport
	adminErr   error
}

// AdminCerts are the files of an admin client certificate from the CA the
// nodes use (issued once per cluster): what a test shows the admin API,
// which is HTTPS with client certificates.
func (c *Cluster) AdminCerts() cluster.CertFiles {
	c.t.Helper()
	c.adminOnce.Do(func() {
		caDir := c.PKI
		if c.external != nil {
			caDir = c.external.PKI
		}
		if c.adminErr = cluster.EnsureLocalCA(caDir); c.adminErr != nil {
			return
		}
		c.adminCerts, c.adminErr = cluster.IssueCert(caDir, filepath.Join(c.Dir, "admin-client"), "test-admin", []string{"127.0.0.1"})
		if c.adminErr != nil {
			return
		}
		tlsCfg, err := cluster.ClientTLS(c.adminCerts)
		c.adminErr = err
		c.adminTr = &http.Transport{TLSClientConfig: tlsCfg}
	})
	if c.adminErr != nil {
		c.t.Fatal(c.adminErr)
	}
	return c.adminCerts
}

// AdminArgs are the shoald command-line flags that show AdminCerts.
func (c *Cluster) AdminArgs() []string {
	f := c.AdminCerts()
	return []string{"--cacert", f.CA, "--cert", f.Cert, "--key", f.Key}
}

// AdminClient is an HTTPS client of the nodes' admin APIs with AdminCerts.
func (c *Cluster) AdminClient(timeout time.Duration) *http.Client {
	c.t.Helper()
	c.AdminCerts()
	return &http.Client{Timeout: timeout, Transport: c.adminTr}
}

// AdminURL is the node's admin API base URL.
func (nd *Node) AdminURL() string { return "https://" + nd.AdminAddr }

// AdminArgs is Cluster.AdminArgs.
func (nd *Node) AdminArgs() []string { return nd.c.AdminArgs() }

// AdminClient is Cluster.AdminClient.
func (nd *Node) AdminClient(timeout time.Duration) *http.Client { return nd.c.AdminClient(timeout) }

// Options shape a test cluster.
type Options struct {
	// ExtraArgs are added to every node's command line.
	ExtraArgs []string
	// NoStart only prepares the nodes.
	NoStart bool
	// External makes the nodes clients of this etcd instead of embedding
	// members.
	External *ExternalEtcd
	// LeaseTTL, when set, is every node's lease TTL (--lease-ttl) instead
	// of the fast profile's 2s. A test whose nodes must keep their leases
	// while other tests load a small machine (a keep-alive late by more
	// than about 1.5s loses a 2s lease) gives them a longer one; a
	// benchmark of the fast profile leaves it zero.
	LeaseTTL time.Duration
	// Web turns the web tier on: each node serves the store's site and
	// the sessions API on a port of its own (Node.WebAddr), reserved like
	// the others and named in a configuration file's web block, which
	// every start reads. It needs a volume (NewVolumeCluster).
	Web bool
}

// NewCluster prepares n nodes that bootstrap one etcd cluster, starts them
// and waits until each sees all n members. Everything is stopped and
// removed at the end of the test.
func NewCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Bin: Binary(t, "shoald"), Dir: t.TempDir(), ExtraArgs: opts.ExtraArgs, external: opts.External}
	if opts.LeaseTTL > 0 {
		c.ExtraArgs = append([]string{"--lease-ttl", opts.LeaseTTL.String()}, c.ExtraArgs...)
	}
	c.PKI = filepath.Join(c.Dir, "pki")
	var initial []string
	for i := 1; i <= n; i++ {
		nd := c.newNode(fmt.Sprintf("node%d", i))
		initial = append(initial, nd.Name+"=https://"+nd.PeerAddr)
		if opts.Web {
			nd.setWeb()
		}
	}
	for _, nd := range c.Nodes {
		if c.external != nil {
			certs, err := cluster.IssueCert(c.external.PKI, filepath.Join(c.Dir, "certs"), nd.Name, []string{"127.0.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			nd.Args = append(nd.Args, c.external.NodeArgs(certs)...)
			continue
		}
		nd.Args = append(nd.Args, "--initial-cluster", strings.Join(initial, ","))
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

func (c *Cluster) newNode(name string) *Node {
	nd := &Node{
		Name:       name,
		DataDir:    filepath.Join(c.Dir, name),
		ClientAddr: ReservePort(c.t),
		PeerAddr:   ReservePort(c.t),
		AdminAddr:  ReservePort(c.t),
		c:          c,
		logPath:    filepath.Join(c.Dir, name+".log"),
	}
	c.Nodes = append(c.Nodes, nd)
	return nd
}

// setWeb gives the node a web address and a configuration file that
// names it (the web block has no command-line flags).
func (nd *Node) setWeb() {
	t := nd.c.t
	t.Helper()
	nd.WebAddr = ReservePort(t)
	conf := filepath.Join(nd.c.Dir, nd.Name+".hcl")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("web {\n  addr = %q\n}\n", nd.WebAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	nd.Args = append(nd.Args, "--config", conf)
}

// WebURL is the base URL of the node's web tier ("http://host:port").
func (nd *Node) WebURL() string { return "http://" + nd.WebAddr }

// AddNode prepares (but does not start) a further node that joins the
// running cluster through the first node's client address.
func (c *Cluster) AddNode(name string) *Node {
	nd := c.newNode(name)
	var eps []string
	for _, o := range c.Nodes[:len(c.Nodes)-1] {
		if o.Running() {
			eps = append(eps, "https://"+o.ClientAddr)
		}
	}
	nd.Args = append(nd.Args, "--join", strings.Join(eps, ","))
	return nd
}

// Node returns the node called name.
func (c *Cluster) Node(name string) *Node {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// CommandArgs are the arguments a start of nd uses.
func (nd *Node) CommandArgs() []string {
	args := []string{"--name", nd.Name, "--data-dir", nd.DataDir, "--profile", "fast", "--admin-addr", nd.AdminAddr, "--admin-debug", "--log-level", "debug", "--reuse-port"}
	if nd.c.external == nil {
		args = append(args, "--client-addr", nd.ClientAddr, "--peer-addr", nd.PeerAddr, "--tls-auto-dir", nd.c.PKI)
	}
	args = append(args, nd.c.ExtraArgs...)
	return append(args, nd.Args...)
}

// Start starts the node's process; its output goes to a log file that is
// copied into the test log if the test fails.
func (nd *Node) Start() {
	nd.c.t.Helper()
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		nd.c.t.Fatalf("%s already running", nd.Name)
	}
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		nd.c.t.Fatal(err)
	}
	fmt.Fprintf(logf, "=== start %s %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(nd.CommandArgs(), " "))
	cmd := exec.Command(nd.c.Bin, nd.CommandArgs()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The node dies with the test process even if the test is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		nd.c.t.Fatalf("start %s: %v", nd.Name, err)
	}
	nd.cmd = cmd
	exited := make(chan struct{})
	nd.exited = exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		nd.mu.Lock()
		nd.exitErr = err
		nd.mu.Unlock()
		close(exited)
	}()
}

// PID is the running process's id, or 0.
func (nd *Node) PID() int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return 0
	}
	return nd.cmd.Process.Pid
}

// Running reports whether the node's process has been started and not
// yet reaped.
func (nd *Node) Running() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

func (nd *Node) signal(sig syscall.Signal) {
	nd.c.t.Helper()
	nd.mu.Lock()
	cmd := nd.cmd
	nd.mu.Unlock()
	if cmd == nil {
		nd.c.t.Fatalf("%s is not running", nd.Name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		nd.c.t.Fatalf("signal %s: %v", nd.Name, err)
	}
}

// Kill sends SIGKILL and reaps the process.
func (nd *Node) Kill() {
	nd.c.t.Helper()
	nd.signal(syscall.SIGKILL)
	nd.wait(10 * time.Second)
}

// Pause sends SIGSTOP.
func (nd *Node) Pause() { nd.c.t.Helper(); nd.signal(syscall.SIGSTOP) }

// Cont sends SIGCONT.
func (nd *Node) Cont() { nd.c.t.Helper(); nd.signal(syscall.SIGCONT) }

// Stop sends SIGTERM and waits for a clean exit; it returns the exit error.
func (nd *Node) Stop() error {
	nd.c.t.Helper()
	nd.signal(syscall.SIGTERM)
	return nd.wait(20 * time.Second)
}

// Wait waits for the process to exit by itself and returns its exit error.
func (nd *Node) Wait(timeout time.Duration) error {
	nd.c.t.Helper()
	return nd.wait(timeout)
}

func (nd *Node) wait(timeout time.Duration) error {
	nd.mu.Lock()
	exited := nd.exited
	nd.mu.Unlock()
	if exited == nil {
		return nil
	}
	select {
	case <-exited:
	case <-time.After(timeout):
		nd.mu.Lock()
		cmd := nd.cmd
		nd.mu.Unlock()
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-exited
		nd.c.t.Errorf("%s did not exit within %s; killed", nd.Name, timeout)
	}
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.cmd = nil
	return nd.exitErr
}

// Log returns what the node printed so far.
func (nd *Node) Log() string {
	b, _ := os.ReadFile(nd.logPath)
	return string(b)
}

// Status asks the node's admin API for its view of the cluster.
func (nd *Node) Status() (cluster.Status, error) {
	var st cluster.Status
	client := nd.AdminClient(3 * time.Second)
	resp, err := client.Get(nd.AdminURL() + "/api/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s: status %s", nd.Name, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// Ready asks the node's /readyz.
func (nd *Node) Ready() bool {
	client := nd.AdminClient(time.Second)
	resp, err := client.Get(nd.AdminURL() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// View asks the node for its in-memory member view (no etcd request).
func (nd *Node) View() (cluster.MembersView, error) {
	var v cluster.MembersView
	client := nd.AdminClient(2 * time.Second)
	resp, err := client.Get(nd.AdminURL() + "/api/members")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("%s: members %s", nd.Name, resp.Status)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

// Members returns the names of the live members nd sees, by incarnation.
func (nd *Node) Members() (map[string]string, error) {
	st, err := nd.View()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range st.Members {
		out[m.Name] = m.Incarnation
	}
	return out, nil
}

// WaitFor polls cond every 20ms until it holds or timeout passes, and
// returns how long it took. On timeout the test fails with what.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) time.Duration {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitMembers waits until every given node is ready and sees exactly n
// live members.
func (c *Cluster) WaitMembers(timeout time.Duration, n int, nodes ...*Node) {
	c.t.Helper()
	c.WaitFor(timeout, fmt.Sprintf("%d members seen by every node", n), func() bool {
		for _, nd := range nodes {
			if !nd.Ready() {
				return false
			}
			m, err := nd.Members()
			if err != nil || len(m) != n {
				return false
			}
		}
		return true
	})
}

// Running lists the nodes whose processes run.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, nd := range c.Nodes {
		if nd.Running() {
			out = append(out, nd)
		}
	}
	return out
}

// stopAll ends every node still running with SIGKILL when the test is
// over: what the test checks has been checked, and a clean stop of a
// whole cluster (leadership handed on, leases revoked, each step bounded
// by etcd timeouts once quorum is gone) only costs seconds. Tests of the
// clean stop call Stop themselves.
func (c *Cluster) stopAll() {
	for _, nd := range c.Nodes {
		nd.mu.Lock()
		cmd, exited := nd.cmd, nd.exited
		nd.mu.Unlock()
		if cmd == nil {
			continue
		}
		cmd.Process.Kill()
		<-exited
	}
	if c.t.Failed() {
		for _, nd := range c.Nodes {
			c.t.Logf("---- log of %s ----\n%s", nd.Name, tail(nd.Log(), 120))
		}
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
