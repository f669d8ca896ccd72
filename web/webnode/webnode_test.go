package webnode_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storenode"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/webnode"
	"github.com/shoal-ha/shoal/web/webtest"
)

// Three nodes of one process, each with the store and the web tier as
// parts: the first to start lays the store on the shared volume and every
// node serves the same sessions; a killed node's store journal is replayed
// by a survivor, and a request retried with the same key during the
// recovery is applied once.
func TestWebPartOnThreeNodes(t *testing.T) {
	c, _, url, vars := threeNodes(t)
	resp, err := http.Get(url(2) + strings.TrimSuffix(vars, "/vars/n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"n":3`) {
		t.Fatalf("get: %d %s", resp.StatusCode, b)
	}
	// The third node dies; the others go on and see every answered add.
	c.Nodes[2].Kill()
	// Until the dead node's recovery released its locks, a request that
	// needs them is answered 503: retried with the same key, it is
	// applied once.
	wc := &webtest.Client{HTTP: &http.Client{Timeout: 20 * time.Second}, Nodes: func() []string { return []string{url(0), url(1)} },
		Backoff: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := wc.Do(ctx, "POST", vars, []byte(`{"op":"add","value":1}`), "a3")
	if err != nil || res.Status != 200 || !strings.Contains(string(res.Body), `"value":4`) {
		t.Fatalf("add after a kill: %v %d %s (%d tries)", err, res.Status, res.Body, res.Tries)
	}
	t.Logf("add after the kill answered after %d tries", res.Tries)
	resp, err = http.Get(url(0) + strings.TrimSuffix(vars, "/vars/n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"n":4`) {
		t.Fatalf("get: %s", b)
	}
}

func threeNodes(t *testing.T) (*nodetest.InProcCluster, []*webnode.Part, func(int) string, string) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	parts := make([]*webnode.Part, len(c.Nodes))
	for i, nd := range c.Nodes {
		cfg := web.DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		log := testlog.New(t, nd.Name)
		sp := storenode.New(storenode.Config{Slot: *nd.Config.Volume.Slot, Format: true, Handlers: webnode.Handlers(cfg), Logger: log})
		parts[i] = webnode.New(webnode.Config{Web: cfg, Store: sp.Store, Logger: log})
		nd.Parts = []node.Part{sp, parts[i]}
		nd.Start()
	}
	c.WaitMembers(60*time.Second, 3, c.Nodes...)
	url := func(i int) string { return "http://" + parts[i].Addr().String() }
	testutil.WaitFor(t, 60*time.Second, "the web tier on every node", func() bool {
		for _, p := range parts {
			if p.Addr() == nil {
				return false
			}
		}
		return true
	})
	// A 503 (the store still busy starting) is an answer to retry with
	// the same key, as a client does.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	on := func(i int) *webtest.Client {
		return &webtest.Client{HTTP: &http.Client{Timeout: 20 * time.Second}, Nodes: func() []string { return []string{url(i)} },
			Backoff: 100 * time.Millisecond}
	}
	res, err := on(0).Do(ctx, "POST", "/api/v1/sessions", nil, "c1")
	if err != nil || res.Status != 201 {
		t.Fatalf("create: %v %d %s", err, res.Status, res.Body)
	}
	var s struct{ ID string }
	json.Unmarshal(res.Body, &s)
	vars := "/api/v1/sessions/" + s.ID + "/vars/n"
	for i := range 3 {
		if res, err := on(i).Do(ctx, "POST", vars, []byte(`{"op":"add","value":1}`), fmt.Sprintf("a%d", i)); err != nil || res.Status != 200 {
			t.Fatalf("add on node %d: %v %d %s", i, err, res.Status, res.Body)
		}
	}
	return c, parts, url, vars
}

// gatePart holds a transaction open on the store (a lock on the web
// tier's directories) from its first Start until released; later
// incarnations (the node may begin one as it stops) pass.
type gatePart struct {
	store   func() *store.Store
	holding chan struct{}
	release chan struct{}
	started atomic.Bool
}

func (g *gatePart) Name() string { return "gate" }

func (g *gatePart) Start(ctx context.Context, inc node.Incarnation) error {
	if g.started.Swap(true) {
		return nil
	}
	st := g.store()
	if err := st.MkdirAll("web/keys", 0o700); err != nil {
		return err
	}
	if err := st.WriteFile("web/keys/gate", []byte("x"), 0o600); err != nil {
		return err
	}
	// Rewriting a file that exists allocates nothing: the transaction
	// holds the directories' locks and no new inode's.
	go st.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.WriteFile("web/keys/gate", []byte("y"), 0o600); err != nil {
			return err
		}
		close(g.holding)
		<-g.release
		return nil
	})
	<-g.holding
	return nil
}

func (g *gatePart) Stop(bool) {}

// A node stopping while its web part still waits for the locks of the web
// tier's directories stops at once: the part's start gives up when its
// context ends instead of waiting for the locks.
func TestStartGivesUpWhenTheNodeStops(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	c := nodetest.NewInProcCluster(t, 1, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	nd := c.Nodes[0]
	cfg := web.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	log := testlog.New(t, nd.Name)
	sp := storenode.New(storenode.Config{Slot: *nd.Config.Volume.Slot, Format: true, Handlers: webnode.Handlers(cfg), Logger: log})
	gate := &gatePart{store: sp.Store, holding: make(chan struct{}), release: make(chan struct{})}
	defer close(gate.release)
	wp := webnode.New(webnode.Config{Web: cfg, Store: sp.Store, Logger: log})
	nd.Parts = []node.Part{sp, gate, wp}
	nd.Start()
	select {
	case <-gate.holding:
	case <-time.After(60 * time.Second):
		t.Fatal("the gate part never started")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- nd.Stop() }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		// Without giving up, the start waits for the lock until the
		// node's start timeout (20 s in the fast profile).
		t.Fatal("the node did not stop while its web part waited for a lock")
	}
	if wp.Addr() != nil {
		t.Fatal("the web part serves")
	}
}

// TestWholeClusterLeaseLossKeepsEveryAdd: every node is cut off from etcd
// at once while adds are in flight, so every incarnation dies and the
// only ones left to recover them are the nodes' own new incarnations.
// The cluster must come back by itself, and every add, retried with its
// key until answered, must count exactly once.
func TestWholeClusterLeaseLossKeepsEveryAdd(t *testing.T) {
	c, parts, _, vars := threeNodes(t)
	nodes := func() []string {
		var out []string
		for _, p := range parts {
			if a := p.Addr(); a != nil {
				out = append(out, "http://"+a.String())
			}
		}
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	const clients, adds = 3, 4
	errs := make(chan error, clients)
	started := make(chan struct{}, clients)
	for i := range clients {
		go func() {
			wc := &webtest.Client{HTTP: &http.Client{Timeout: 5 * time.Second}, Nodes: nodes, Backoff: 200 * time.Millisecond}
			for j := range adds {
				res, err := wc.Do(ctx, "POST", vars, []byte(`{"op":"add","value":1}`), fmt.Sprintf("w%d-%d", i, j))
				if err == nil && res.Status != 200 {
					err = fmt.Errorf("status %d: %s", res.Status, res.Body)
				}
				if err != nil {
					errs <- fmt.Errorf("client %d add %d: %w", i, j, err)
					return
				}
				if j == 0 {
					started <- struct{}{}
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		<-started
	}
	c.LoseEveryLease(30 * time.Second)
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	wc := &webtest.Client{HTTP: &http.Client{Timeout: 5 * time.Second}, Nodes: nodes, Backoff: 200 * time.Millisecond}
	want := fmt.Sprintf(`"n":%d`, 3+clients*adds)
	for i := range parts {
		wc.Nodes = func() []string {
			if a := parts[i].Addr(); a != nil {
				return []string{"http://" + a.String()}
			}
			return nil
		}
		res, err := wc.Do(ctx, "GET", strings.TrimSuffix(vars, "/vars/n"), nil, "")
		if err != nil || res.Status != 200 || !strings.Contains(string(res.Body), want) {
			t.Fatalf("node %d: %v %d %s, want %s", i+1, err, res.Status, res.Body, want)
		}
	}
}
