package dlm

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// fakeDeadlineMember is a real lease-backed member whose self-fence
// deadline is read on a fake clock, so scenarios can move a node past it.
type fakeDeadlineMember struct {
	*LeaseMember
	mu       sync.Mutex
	deadline time.Time
}

func (m *fakeDeadlineMember) Deadline() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.deadline
}

type scenarioNode struct {
	name  string
	m     *fakeDeadlineMember
	n     *Node
	clk   *clock.Fake
	cli   *clientv3.Client
	calls *atomic.Int64
	mark  int64
}

type pendingAcquire struct {
	done chan struct{}
	l    *Lock
	err  error
}

// nodeRunner drives real Nodes on a one-member etcd cluster from scenario
// commands:
//
//	join NODE                       start a node (deadline 10s ahead on its fake clock)
//	acquire NODE USER RES MODE [try|recovery]
//	await NODE USER                 wait for a queued acquire
//	release NODE USER | use NODE USER | setlvb NODE USER VALUE | lvb NODE USER
//	etcd NODE                       etcd requests since the last "etcd NODE"
//	advance NODE DURATION           move NODE's clock (past its deadline: it fences)
//	kill NODE                       revoke NODE's lease, as its expiry would
//	recover COORD NODE              COORD releases dead NODE's locks
//	table                           the lock table as the first node sees it
type nodeRunner struct {
	t       *testing.T
	c       *etcdtest.Cluster
	prefix  string
	nodes   map[string]*scenarioNode
	order   []string
	held    map[string]*Lock
	pending map[string]*pendingAcquire
	toks    map[Token]int
	granted map[string][]seenGrant // per resource, the grants described so far
}

// seenGrant is a grant a scenario described: its mode and token.
type seenGrant struct {
	mode  Mode
	token Token
}

func (r *nodeRunner) tok(t Token) string {
	if _, ok := r.toks[t]; !ok {
		r.toks[t] = len(r.toks) + 1
	}
	return fmt.Sprintf("T%d", r.toks[t])
}

func (r *nodeRunner) check() error {
	for _, name := range r.order {
		if err := r.nodes[name].n.Check(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// settle waits until no node has a write in flight and every live node's
// replica has caught up with etcd.
func (r *nodeRunner) settle() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		resp, err := r.c.Client(0).Get(ctx, r.prefix+"/settle")
		if err != nil {
			return err
		}
		rev := resp.Header.Revision
		busy := false
		for _, name := range r.order {
			x := r.nodes[name]
			if x.n.Err() != nil {
				continue
			}
			if err := x.n.waitRev(ctx, rev); err != nil && x.n.Err() == nil {
				return err
			}
			x.n.mu.Lock()
			for _, nl := range x.n.locks {
				busy = busy || nl.busy
			}
			x.n.mu.Unlock()
		}
		if !busy {
			// Let any grant just delivered reach its waiter.
			for _, p := range r.pending {
				select {
				case <-p.done:
				case <-time.After(5 * time.Millisecond):
				}
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("nodes did not settle")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *nodeRunner) node(name string) (*scenarioNode, error) {
	x := r.nodes[name]
	if x == nil {
		return nil, fmt.Errorf("no node %q", name)
	}
	return x, nil
}

func (r *nodeRunner) describe(who string, l *Lock, err error) string {
	if err != nil {
		return fmt.Sprintf("%s: %v", who, err)
	}
	v, ok := l.LVB()
	lvb := "invalid"
	if ok {
		lvb = fmt.Sprintf("%q", strings.TrimRight(string(v), "\x00"))
	}
	// A grant's token exceeds every earlier conflicting grant's. Grants
	// that do not conflict (two nodes' PR, say) may be seen in either
	// order: a node's local user can ride on the node's earlier grant.
	res := l.Resource().String()
	for _, g := range r.granted[res] {
		if !Compatible(g.mode, l.Mode()) && l.Token() < g.token {
			r.t.Errorf("%s of %s got token %s, below the earlier conflicting %s grant's %s", l.Mode(), res, l.Token(), g.mode, g.token)
		}
	}
	r.granted[res] = append(r.granted[res], seenGrant{l.Mode(), l.Token()})
	return fmt.Sprintf("%s: granted %s %s token=%s lvb=%s", who, res, l.Mode(), r.tok(l.Token()), lvb)
}

func (r *nodeRunner) exec(a []string) (string, error) {
	arg := func(i int) string {
		if i < len(a) {
			return a[i]
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	who := arg(1) + "/" + arg(2)
	var out string
	switch a[0] {
	case "join":
		calls := &atomic.Int64{}
		count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			calls.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		})
		cli, err := r.c.NewClientTo(r.c.Endpoints, count)
		if err != nil {
			return "", err
		}
		r.t.Cleanup(func() { cli.Close() })
		lm, err := JoinAsClient(ctx, LeaseMemberConfig{Client: r.c.Client(0), Prefix: r.prefix, Name: arg(1), TTL: 10 * time.Second, Logger: testlog.New(r.t, arg(1))})
		if err != nil {
			return "", err
		}
		clk := clock.NewFake(time.Unix(1_000_000, 0))
		m := &fakeDeadlineMember{LeaseMember: lm, deadline: clk.Now().Add(10 * time.Second)}
		cfg := DefaultConfig()
		cfg.Client, cfg.Member, cfg.Prefix, cfg.Clock, cfg.Logger = cli, m, r.prefix, clk, testlog.New(r.t, arg(1))
		n, err := Start(ctx, cfg)
		if err != nil {
			return "", err
		}
		r.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = n.Close(ctx)
			lm.Stop()
		})
		r.nodes[arg(1)] = &scenarioNode{name: arg(1), m: m, n: n, clk: clk, cli: cli, calls: calls}
		r.order = append(r.order, arg(1))
	case "acquire":
		x, err := r.node(arg(1))
		if err != nil {
			return "", err
		}
		res, err := ParseResource(arg(3))
		if err != nil {
			return "", err
		}
		mode, err := ParseMode(arg(4))
		if err != nil {
			return "", err
		}
		var opts []Option
		switch arg(5) {
		case "try":
			opts = append(opts, Try())
		case "recovery":
			opts = append(opts, Recovery())
		}
		p := &pendingAcquire{done: make(chan struct{})}
		go func() {
			p.l, p.err = x.n.Acquire(context.Background(), res, mode, opts...)
			close(p.done)
		}()
		// Wait until the acquire is answered or sits queued.
		deadline := time.Now().Add(5 * time.Second)
		for {
			select {
			case <-p.done:
				if p.err == nil {
					r.held[who] = p.l
				}
				return r.describe(who, p.l, p.err) + "\n", r.settle()
			default:
			}
			if err := r.settle(); err != nil {
				return "", err
			}
			select {
			case <-p.done:
				continue
			default:
			}
			if queued(x.n, res) || time.Now().After(deadline) {
				// The request may have become queued after the settle
				// above: the other nodes see it too before the next
				// command (a reader on another node must find the
				// writer queued, not grant itself from its cache).
				r.pending[who] = p
				return who + ": waiting\n", r.settle()
			}
		}
	case "await":
		p := r.pending[who]
		if p == nil {
			return "", fmt.Errorf("no queued acquire of %s", who)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			return who + ": still waiting\n", nil
		}
		delete(r.pending, who)
		if p.err == nil {
			r.held[who] = p.l
		}
		out = r.describe(who, p.l, p.err) + "\n"
	case "release", "use", "setlvb", "lvb":
		l := r.held[who]
		if l == nil {
			return "", fmt.Errorf("%s holds nothing", who)
		}
		var err error
		switch a[0] {
		case "release":
			delete(r.held, who)
			err = l.Release()
		case "use":
			err = l.Use()
		case "setlvb":
			err = l.SetLVB([]byte(arg(3)))
		case "lvb":
			v, ok := l.LVB()
			out = fmt.Sprintf("%s: lvb %q valid=%v\n", who, strings.TrimRight(string(v), "\x00"), ok)
		}
		if err != nil {
			out = fmt.Sprintf("%s: %v\n", who, err)
		} else if a[0] == "use" {
			out = who + ": ok\n"
		}
	case "etcd":
		x, err := r.node(arg(1))
		if err != nil {
			return "", err
		}
		if err := r.settle(); err != nil {
			return "", err
		}
		now := x.calls.Load()
		out = fmt.Sprintf("%s: %d etcd requests\n", arg(1), now-x.mark)
		x.mark = now
	case "advance":
		x, err := r.node(arg(1))
		if err != nil {
			return "", err
		}
		d, err := time.ParseDuration(arg(2))
		if err != nil {
			return "", err
		}
		x.clk.Advance(d)
		if !x.clk.Now().Before(x.m.Deadline()) {
			select {
			case <-x.n.Lost():
				out = arg(1) + ": fenced\n"
			case <-time.After(5 * time.Second):
				out = arg(1) + ": not fenced past its deadline\n"
			}
		}
	case "kill":
		x, err := r.node(arg(1))
		if err != nil {
			return "", err
		}
		x.m.Stop()
		if _, err := r.c.Client(0).Revoke(ctx, x.m.LeaseID()); err != nil {
			return "", err
		}
		for _, name := range r.order {
			if name != arg(1) && r.nodes[name].n.Err() == nil {
				if err := r.nodes[name].n.WaitDead(ctx, x.n.Owner()); err != nil {
					return "", err
				}
			}
		}
	case "recover":
		c, err := r.node(arg(1))
		if err != nil {
			return "", err
		}
		x, err := r.node(arg(2))
		if err != nil {
			return "", err
		}
		if err := c.n.ReleaseDead(ctx, x.n.Owner()); err != nil {
			return "", err
		}
	case "table":
		var live *Node
		for _, name := range r.order {
			if r.nodes[name].n.Err() == nil {
				live = r.nodes[name].n
				break
			}
		}
		if err := r.settle(); err != nil {
			return "", err
		}
		var lines []string
		for _, l := range live.Locks() {
			s := fmt.Sprintf("%s %s", l.Resource, l.Owner.Node)
			if l.Held {
				s += fmt.Sprintf(" held=%s token=%s", l.Granted, r.tok(l.Token))
			}
			if l.Waiting() {
				s += " wait=" + l.Want.String()
			}
			if l.Orphan {
				s += " orphan"
			}
			if l.Recovery {
				s += " recovery"
			}
			lines = append(lines, s)
		}
		sort.Strings(lines)
		if len(lines) == 0 {
			return "(empty)\n", nil
		}
		return strings.Join(lines, "\n") + "\n", nil
	default:
		return "", fmt.Errorf("unknown command %q", a[0])
	}
	return out, r.settle()
}

// queued reports whether n has a request for res waiting in the cluster.
func queued(n *Node, res Resource) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, nl := range n.locks {
		if nl.res == res && len(nl.waiters) > 0 && !nl.busy && nl.key != "" {
			if l, ok := n.rep.Table.Lock(nl.key); ok && l.Waiting() {
				return true
			}
			if nl.held && nl.blocked {
				return true // waits locally behind a blocking callback
			}
		}
	}
	return false
}

func TestNodeScenarios(t *testing.T) {
	t.Parallel() // its own etcd member(s), ports reserved, prefixes its own
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := etcdtest.NewCluster(t, 1)
	i := 0
	runScenarios(t, "testdata/node", func(t *testing.T) scenarioRunner {
		i++
		return &nodeRunner{t: t, c: c, prefix: fmt.Sprintf("/scn%d", i), nodes: map[string]*scenarioNode{},
			held: map[string]*Lock{}, pending: map[string]*pendingAcquire{}, toks: map[Token]int{}, granted: map[string][]seenGrant{}}
	})
}
