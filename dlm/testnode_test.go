package dlm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
)

// The OS-process tests re-run this test binary as a cluster node: one
// embedded etcd member plus one DLM node, driven by line commands on
// stdin ("ID COMMAND ARGS...") and answering "ID ok ..." or "ID err ...".
const testNodeEnv = "SHOAL_DLM_TESTNODE"

func TestMain(m *testing.M) {
	if spec := os.Getenv(testNodeEnv); spec != "" {
		os.Exit(testNodeMain(spec))
	}
	os.Exit(m.Run())
}

// testNodeSpec is passed to a node process as JSON in testNodeEnv.
type testNodeSpec struct {
	Name, Dir, PeerURL, ClientURL, InitialCluster, Prefix string
}

type testNodeProc struct {
	spec  testNodeSpec
	etcd  *embed.Etcd
	cli   *clientv3.Client
	calls atomic.Int64
	out   *bufio.Writer
	outMu sync.Mutex

	mu   sync.Mutex
	m    *LeaseMember
	n    *Node
	held map[string]*Lock
}

func testNodeMain(specJSON string) int {
	var spec testNodeSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = spec.Name, spec.Dir
	pu, _ := url.Parse(spec.PeerURL)
	cu, _ := url.Parse(spec.ClientURL)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.InitialCluster, cfg.InitialClusterToken = spec.InitialCluster, "dlm-proc"
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.LogLevel = "error"
	cfg.SocketOpts.ReusePort = true // binds the ports the parent reserved
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd not ready")
		return 1
	}
	p := &testNodeProc{spec: spec, etcd: e, out: bufio.NewWriter(os.Stdout), held: map[string]*Lock{}}
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		p.calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	p.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{spec.ClientURL}, DialTimeout: 5 * time.Second, DialOptions: []grpc.DialOption{count}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	if err := p.join(); err != nil {
		fmt.Fprintln(os.Stderr, "join:", err)
		return 1
	}
	p.reply("0", "ok ready "+p.n.Owner().String())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		go func() {
			res, err := p.do(f[1], f[2:])
			if err != nil {
				p.reply(f[0], "err "+strings.ReplaceAll(err.Error(), "\n", " | "))
			} else {
				p.reply(f[0], "ok "+res)
			}
		}()
	}
	return 0
}

func (p *testNodeProc) reply(id, s string) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	fmt.Fprintf(p.out, "%s %s\n", id, s)
	p.out.Flush()
}

// join registers a new incarnation.
func (p *testNodeProc) join() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := hclog.New(&hclog.LoggerOptions{Name: p.spec.Name, Output: os.Stderr, Level: hclog.Info})
	m, err := JoinAsClient(ctx, LeaseMemberConfig{Client: p.cli, Prefix: p.spec.Prefix, Name: p.spec.Name, TTL: 2 * time.Second, Margin: 300 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, Logger: logger})
	if err != nil {
		return err
	}
	cfg := DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix, cfg.Logger = p.cli, m, p.spec.Prefix, logger
	// As a node with an embedded member: a write caught by the leader's
	// death is sent again once the member knows the new leader.
	cfg.LeaderChanges = p.etcd.Server.LeaderChangedNotify
	n, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.m, p.n, p.held = m, n, map[string]*Lock{}
	p.mu.Unlock()
	return nil
}

func (p *testNodeProc) node() *Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *testNodeProc) do(cmd string, a []string) (string, error) {
	n := p.node()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	arg := func(i int) string {
		if i < len(a) {
			return a[i]
		}
		return ""
	}
	switch cmd {
	case "acquire": // acquire HANDLE RESOURCE MODE [recovery]
		res, err := ParseResource(arg(1))
		if err != nil {
			return "", err
		}
		mode, err := ParseMode(arg(2))
		if err != nil {
			return "", err
		}
		var opts []Option
		if arg(3) == "recovery" {
			opts = append(opts, Recovery())
		}
		l, err := n.Acquire(ctx, res, mode, opts...)
		if err != nil {
			return "", err
		}
		if err := l.Use(); err != nil {
			return "", err
		}
		p.mu.Lock()
		p.held[arg(0)] = l
		p.mu.Unlock()
		return l.Token().String(), nil
	case "release", "use":
		p.mu.Lock()
		l := p.held[arg(0)]
		if cmd == "release" {
			delete(p.held, arg(0))
		}
		p.mu.Unlock()
		if l == nil {
			return "", fmt.Errorf("no handle %q", arg(0))
		}
		if cmd == "use" {
			return "", l.Use()
		}
		return "", l.Release()
	case "reacquire": // reacquire RESOURCE COUNT: local cached re-acquires; reports etcd requests made
		res, err := ParseResource(arg(0))
		if err != nil {
			return "", err
		}
		count, _ := strconv.Atoi(arg(1))
		before := p.calls.Load()
		for range count {
			l, err := n.Acquire(ctx, res, PR)
			if err != nil {
				return "", err
			}
			if err := l.Use(); err != nil {
				return "", err
			}
			l.Release()
		}
		return strconv.FormatInt(p.calls.Load()-before, 10), nil
	case "latency": // latency COUNT: fresh resources, acquire latency in microseconds (median max)
		count, _ := strconv.Atoi(arg(0))
		var ds []time.Duration
		for i := range count {
			start := time.Now()
			l, err := n.Acquire(ctx, Named(fmt.Sprintf("lat-%d-%d", time.Now().UnixNano(), i)), EX)
			if err != nil {
				return "", err
			}
			ds = append(ds, time.Since(start))
			l.Release()
		}
		slices.Sort(ds)
		return fmt.Sprintf("%d %d", ds[len(ds)/2].Microseconds(), ds[len(ds)-1].Microseconds()), nil
	case "owner":
		return n.Owner().String(), nil
	case "waitdead", "releasedead":
		o, err := parseOwner(arg(0))
		if err != nil {
			return "", err
		}
		if cmd == "waitdead" {
			return "", n.WaitDead(ctx, o)
		}
		return "", n.ReleaseDead(ctx, o)
	case "audit":
		b, err := json.Marshal(n.Audit())
		return string(b), err
	case "check":
		return "", n.Check()
	case "locks":
		return strings.ReplaceAll(formatLocks(n.Locks()), "\n", " | "), nil
	case "stepdown":
		// Hand etcd leadership to another member, so that pausing this
		// process pauses a DLM node and an etcd follower, not the leader.
		srv := p.etcd.Server
		if srv.Leader() != srv.MemberID() {
			return "follower", nil
		}
		for _, m := range srv.Cluster().Members() {
			if m.ID != srv.MemberID() {
				return "moved", srv.MoveLeader(ctx, uint64(srv.MemberID()), uint64(m.ID))
			}
		}
		return "", fmt.Errorf("no other member")
	case "leader": // the etcd leader's member id as this member knows it, 0 for none
		srv := p.etcd.Server
		if srv.Leader() == srv.MemberID() {
			return "self", nil
		}
		return fmt.Sprintf("%x", uint64(srv.Leader())), nil
	case "rejoin":
		if err := p.join(); err != nil {
			return "", err
		}
		return p.node().Owner().String(), nil
	}
	return "", fmt.Errorf("unknown command %q", cmd)
}
