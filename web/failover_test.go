package web

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/web/internal/memstore"
	"github.com/shoal-ha/shoal/web/session"
	"github.com/shoal-ha/shoal/web/webtest"
)

var (
	failoverOps     = flag.Int("web.ops", 240, "operations per in-process failover test")
	failoverClients = flag.Int("web.clients", 6, "concurrent clients in the in-process failover tests")
)

// backend is the store under the failover cluster: the memstore twin or
// the real store on an in-memory device.
type backend interface {
	// open opens slot as a new incarnation named name.
	open(t *testing.T, slot int, name string, cfg Config) Store
	// fence cuts the incarnation off: its commits fail from now on.
	fence(slot int, name string)
	// replay hands dead's unacknowledged intents to recovery on coord.
	replay(coord Store, coordSlot, dead int, api *API) error
	// recovered ends the dead incarnation's recovery.
	recovered(slot int, name string)
	// view reads the volume (for the final check).
	view() fs.FS
}

type memBackend struct{ vol *memstore.Volume }

func (b memBackend) open(t *testing.T, slot int, name string, cfg Config) Store {
	b.vol.Unfence(slot)
	return b.vol.Node(slot)
}
func (b memBackend) fence(slot int, name string) { b.vol.Fence(slot) }
func (b memBackend) replay(coord Store, coordSlot, dead int, api *API) error {
	_, err := b.vol.Replay(context.Background(), coordSlot, dead, func(tx session.Tx, rec memstore.Record) error {
		if rec.Kind != session.RecordIntent {
			return nil
		}
		return api.RecoverRecord(tx, rec.Payload)
	})
	return err
}
func (b memBackend) recovered(int, string) {}
func (b memBackend) view() fs.FS           { return b.vol.Node(0) }

// tnode is one node of the in-process failover cluster.
type tnode struct {
	slot int
	inc  int
	name string
	st   Store
	m    *member
	srv  *Server
	hs   *httptest.Server
	dead bool
}

// fcluster is three nodes over one memstore volume; a node is killed at a
// failpoint (fenced, its connections cut, its handler aborted), recovered
// by a survivor replaying its journal, and restarted as a new incarnation.
type fcluster struct {
	t     *testing.T
	c     *cluster
	b     backend
	mu    sync.Mutex
	nodes []*tnode
	// armed is the point the next kill happens at ("" when none).
	armed     Point
	kills     map[Point]int
	mutations atomic.Int64
	killEvery int64
	wg        sync.WaitGroup
}

func newFCluster(t *testing.T, n int, killEvery int64, b backend, c *cluster) *fcluster {
	fc := &fcluster{t: t, c: c, b: b, kills: map[Point]int{}, killEvery: killEvery}
	for i := 1; i <= n; i++ {
		nd := &tnode{slot: i}
		fc.nodes = append(fc.nodes, nd)
		fc.start(nd)
	}
	t.Cleanup(func() {
		fc.wg.Wait()
		fc.mu.Lock()
		defer fc.mu.Unlock()
		for _, nd := range fc.nodes {
			if !nd.dead {
				nd.hs.Close()
				nd.srv.Close()
			}
		}
	})
	return fc
}

// start (re)starts nd as a new incarnation; fc.mu is held or nd is new.
func (fc *fcluster) start(nd *tnode) {
	nd.inc++
	nd.m = &member{c: fc.c, self: session.Owner{Node: fmt.Sprintf("n%d", nd.slot), Incarnation: fmt.Sprint(nd.inc)}}
	nd.name = nd.m.self.String()
	fc.c.set(nd.m.self, session.OwnerLive)
	cfg := testConfig(fc.t)
	cfg.RecoveryWait = 100 * time.Millisecond
	cfg.Failpoint = func(p Point) { fc.failpoint(nd, p) }
	nd.st = fc.b.open(fc.t, nd.slot, nd.name, cfg)
	srv, err := NewServer(cfg, nd.st, nd.m)
	if err != nil {
		fc.t.Fatal(err)
	}
	nd.srv = srv
	nd.hs = httptest.NewServer(srv.Handler())
	nd.dead = false
}

func (fc *fcluster) urls() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	var out []string
	for _, nd := range fc.nodes {
		if !nd.dead {
			out = append(out, nd.hs.URL)
		}
	}
	return out
}

func (fc *fcluster) failpoint(nd *tnode, p Point) {
	if p == BeforeIntent && fc.mutations.Add(1)%fc.killEvery == 0 {
		fc.mu.Lock()
		fc.armed = Points[(fc.total())%len(Points)]
		fc.mu.Unlock()
	}
	fc.mu.Lock()
	if fc.armed != p || nd.dead || nd.srv.cfg.Failpoint == nil || fc.live() < len(fc.nodes) {
		fc.mu.Unlock()
		return
	}
	fc.armed = ""
	fc.kills[p]++
	fc.killLocked(nd)
	fc.mu.Unlock()
	// The node is gone: whatever this request did not do yet, it never does.
	panic(http.ErrAbortHandler)
}

// wantsKills reports whether some point of the path has not seen two
// kills yet (never, for a cluster that does not kill).
func (fc *fcluster) wantsKills() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.killEvery >= 1<<30 {
		return false
	}
	for _, p := range Points {
		if fc.kills[p] < 2 {
			return true
		}
	}
	return false
}

func (fc *fcluster) total() int {
	n := 0
	for _, k := range fc.kills {
		n += k
	}
	return n
}

func (fc *fcluster) live() int {
	n := 0
	for _, nd := range fc.nodes {
		if !nd.dead {
			n++
		}
	}
	return n
}

// killLocked (one node dead at a time, as a three-node etcd quorum
// allows) fences nd's slot, cuts its connections and starts its
// recovery on a survivor, then its restart.
func (fc *fcluster) killLocked(nd *tnode) {
	nd.dead = true
	fc.b.fence(nd.slot, nd.name)
	fc.c.set(nd.m.self, session.OwnerRecovering)
	hs, srv, owner, name := nd.hs, nd.srv, nd.m.self, nd.name
	fc.wg.Add(1)
	go func() {
		defer fc.wg.Done()
		hs.CloseClientConnections()
		// Let retries find the key "recovering" for a while.
		time.Sleep(10 * time.Millisecond)
		fc.recover(nd.slot, owner)
		fc.b.recovered(nd.slot, name)
		hs.Close()
		srv.Close()
		fc.mu.Lock()
		fc.start(nd)
		fc.mu.Unlock()
	}()
}

// recover replays slot's journal on a live node, retrying on another when
// the coordinator is killed part way.
func (fc *fcluster) recover(slot int, owner session.Owner) {
	for {
		fc.mu.Lock()
		var coord *tnode
		for _, nd := range fc.nodes {
			if !nd.dead {
				coord = nd
				break
			}
		}
		fc.mu.Unlock()
		if coord == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		err := fc.b.replay(coord.st, coord.slot, slot, coord.srv.API())
		if err == nil {
			fc.c.set(owner, session.OwnerRecovered)
			return
		}
		fc.t.Logf("replay of slot %d on slot %d: %v; again", slot, coord.slot, err)
	}
}

// runClients runs clients doing set/add/append/get on sessions over the
// cluster, records the history, and returns it with the acknowledged adds.
// Each client does ops/clients operations, and goes on (up to four times
// as many) while fc still wants kills at some point of the path.
func runClients(t *testing.T, fc *fcluster, clients, ops int, sessions []string) (*webtest.Recorder, map[string]int64) {
	wc := &webtest.Client{HTTP: &http.Client{Timeout: 5 * time.Second}, Nodes: fc.urls, Backoff: 10 * time.Millisecond}
	rec := webtest.NewRecorder()
	var mu sync.Mutex
	acked := map[string]int64{}
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	per := ops / clients
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(cl), 7))
			for i := 0; i < per || i < 4*per && fc.wantsKills(); i++ {
				sess := sessions[r.IntN(len(sessions))]
				kinds := []string{"set", "add", "append", "get"}
				kind := kinds[r.IntN(len(kinds))]
				v := map[string]string{"set": "r", "add": "c", "append": "l"}[kind]
				if kind == "get" {
					v = []string{"r", "c", "l"}[r.IntN(3)]
				}
				in := webtest.Input{Session: sess, Var: v, Kind: kind, Value: int64(r.IntN(100) + 1)}
				call := rec.Now()
				var res webtest.Result
				var err error
				if kind == "get" {
					res, err = wc.Do(ctx, "GET", "/api/v1/sessions/"+sess, nil, "")
				} else {
					res, err = wc.Do(ctx, "POST", "/api/v1/sessions/"+sess+"/vars/"+v, in.Body(), webtest.NewKey())
				}
				ret := rec.Now()
				if err != nil {
					t.Errorf("client %d: %s %s: %v", cl, kind, v, err)
					rec.Add(cl, in, call, webtest.Output{Unknown: true}, ret)
					continue
				}
				if res.Status != 200 {
					t.Errorf("client %d: %s %s: %d %s", cl, kind, v, res.Status, res.Body)
					continue
				}
				out := webtest.Output{}
				if kind == "get" {
					var view SessionView
					json.Unmarshal(res.Body, &view)
					out.Value = "null"
					if val, ok := view.Vars[v]; ok {
						out.Value = string(val)
					}
				} else {
					var a session.VarAnswer
					json.Unmarshal(res.Body, &a)
					out.Value = string(a.Value)
					if kind == "add" {
						mu.Lock()
						acked[sess] += in.Value
						mu.Unlock()
					}
				}
				rec.Add(cl, in, call, out, ret)
			}
		}()
	}
	wg.Wait()
	return rec, acked
}

// Nodes are killed at every point of the request path while clients keep
// sending set/add/append/get to all three and retry on another node; every
// request gets exactly one answer, every acknowledged add counts once, and
// the history is linearizable.
func TestFailoverExactlyOnce(t *testing.T) {
	c := newCluster()
	failoverExactlyOnce(t, newFCluster(t, 3, 6, memBackend{c.vol}, c))
}

func failoverExactlyOnce(t *testing.T, fc *fcluster) {
	ops := *failoverOps
	var sessions []string
	for i := range 3 {
		u := fc.urls()[0]
		sessions = append(sessions, createSession(t, u, fmt.Sprintf("create-%d", i)))
	}
	rec, acked := runClients(t, fc, *failoverClients, ops, sessions)
	fc.wg.Wait()
	fc.mu.Lock()
	t.Logf("%d operations, kills by point: %v", rec.Len(), fc.kills)
	for _, p := range Points {
		if fc.kills[p] == 0 {
			t.Errorf("no kill at %s", p)
		}
	}
	fc.mu.Unlock()
	// Every acknowledged add exactly once.
	u := fc.urls()[0]
	for _, s := range sessions {
		resp, body := do(t, "GET", u+"/api/v1/sessions/"+s, nil, "")
		var view SessionView
		if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &view) != nil {
			t.Fatalf("get %s: %d %s", s, resp.StatusCode, body)
		}
		got := int64(0)
		if c, ok := view.Vars["c"]; ok {
			fmt.Sscan(string(c), &got)
		}
		if got != acked[s] {
			t.Errorf("session %s: counter %d, acknowledged adds sum to %d", s, got, acked[s])
		}
	}
	if err := session.NewEngine(DefaultConfig().Layout).Check(fc.b.view()); err != nil {
		t.Fatal(err)
	}
	res, info := rec.Check(30 * time.Second)
	if res != porcupine.Ok {
		var b strings.Builder
		porcupine.Visualize(webtest.Model, info, &b)
		t.Fatalf("history is %s (%d operations)", res, rec.Len())
	}
	testutil.WaitFor(t, 5*time.Second, "all nodes back", func() bool { return len(fc.urls()) == 3 })
}

func failoverNoKills(t *testing.T, fc *fcluster) {
	var sessions []string
	for i := range 3 {
		sessions = append(sessions, createSession(t, fc.urls()[0], fmt.Sprintf("create-%d", i)))
	}
	rec, _ := runClients(t, fc, *failoverClients, *failoverOps, sessions)
	if res, _ := rec.Check(30 * time.Second); res != porcupine.Ok {
		t.Fatalf("history is %s", res)
	}
}
