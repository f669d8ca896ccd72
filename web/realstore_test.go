package web

import (
	"context"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web/session"
)

// storeBackend runs the failover cluster on the real store over one
// in-memory device, with the store's in-memory lock manager.
type storeBackend struct {
	t   *testing.T
	dev blockdev.Device
	lm  *store.MemLocks
	mu  sync.Mutex
	all []*store.Store
}

func newStoreBackend(t *testing.T) *storeBackend {
	dev, err := blockdev.NewMem(16384*store.BlockSize, 512)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Format(context.Background(), dev, store.FormatOptions{Slots: 4}); err != nil {
		t.Fatal(err)
	}
	b := &storeBackend{t: t, dev: dev, lm: store.NewMemLocks()}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, s := range b.all {
			s.Close()
		}
	})
	return b
}

func (b *storeBackend) openStore(t *testing.T, slot int, name string, cfg Config) *store.Store {
	scfg := store.DefaultConfig(b.dev, slot, b.lm.Node(name))
	scfg.Logger = testlog.New(t, name)
	scfg.OrphanCheck = 20 * time.Millisecond // many kills: requests held back behind orphans look often
	scfg.Handlers = map[string]store.Handler{session.RecordIntent: RecoveryHandler(cfg)}
	s, err := store.Open(context.Background(), scfg)
	if err != nil {
		t.Fatalf("open slot %d: %v", slot, err)
	}
	b.mu.Lock()
	b.all = append(b.all, s)
	b.mu.Unlock()
	return s
}

func (b *storeBackend) open(t *testing.T, slot int, name string, cfg Config) Store {
	return FromStore(b.openStore(t, slot, name, cfg))
}

func (b *storeBackend) fence(slot int, name string) { b.lm.Kill(name) }

func (b *storeBackend) replay(coord Store, coordSlot, dead int, api *API) error {
	_, err := coord.(storeAdapter).ReplaySlot(context.Background(), dead)
	return err
}

func (b *storeBackend) recovered(slot int, name string) { b.lm.ReleaseDead(name) }

func (b *storeBackend) view() fs.FS {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all[len(b.all)-1]
}

// The failover test on the real store: intents in the store's journal,
// effects under its locks, recovery through its ReplaySlot.
func TestFailoverExactlyOnceOnStore(t *testing.T) {
	t.Parallel()
	c := newCluster()
	failoverExactlyOnce(t, newFCluster(t, 3, 6, newStoreBackend(t), c))
}

// Three nodes on the real store with concurrent clients and no kills.
func TestConcurrentOnStore(t *testing.T) {
	t.Parallel()
	c := newCluster()
	failoverNoKills(t, newFCluster(t, 3, 1<<40, newStoreBackend(t), c))
}

// The sessions API and the content tree on the real store, one request at
// a time over two nodes; a node killed after journaling an intent is
// recovered by the other through the store's ReplaySlot, and the retry gets
// the answer recovery stored.
func TestSessionsOnStore(t *testing.T) {
	t.Parallel()
	b := newStoreBackend(t)
	c := newCluster()
	cfg := testConfig(t)
	var killed atomic.Bool
	cfg1 := cfg
	cfg1.Failpoint = func(p Point) {
		if p == AfterIntent && killed.CompareAndSwap(false, true) {
			b.fence(1, "n1/1")
			c.set(session.Owner{Node: "n1", Incarnation: "1"}, session.OwnerRecovering)
			panic(http.ErrAbortHandler)
		}
	}
	st1 := b.openStore(t, 1, "n1/1", cfg1)
	st2 := b.openStore(t, 2, "n2/1", cfg)
	if err := st1.MkdirAll("site/docs", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := st1.WriteFile("site/docs/index.html", []byte("<p>docs</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	m1 := &member{c: c, self: session.Owner{Node: "n1", Incarnation: "1"}}
	m2 := &member{c: c, self: session.Owner{Node: "n2", Incarnation: "1"}}
	c.set(m1.self, session.OwnerLive)
	c.set(m2.self, session.OwnerLive)
	srv1, err := NewServer(cfg1, FromStore(st1), m1)
	if err != nil {
		t.Fatal(err)
	}
	srv2, err := NewServer(cfg, FromStore(st2), m2)
	if err != nil {
		t.Fatal(err)
	}
	hs1 := httptest.NewServer(srv1.Handler())
	defer hs1.Close()
	hs2 := httptest.NewServer(srv2.Handler())
	defer hs2.Close()

	resp, body := do(t, "GET", hs2.URL+"/docs/", nil, "")
	tag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || body != "<p>docs</p>" || tag == "" {
		t.Fatalf("content: %d %q %q", resp.StatusCode, body, tag)
	}
	if resp, _ := do(t, "GET", hs2.URL+"/docs/", map[string]string{"If-None-Match": tag}, ""); resp.StatusCode != 304 {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", hs1.URL+"/web/keys", nil, ""); resp.StatusCode != 404 {
		t.Fatalf("internals reachable: %d", resp.StatusCode)
	}
	id := createSession(t, hs2.URL, "c1")
	vars := "/api/v1/sessions/" + id + "/vars/n"
	if resp, body := do(t, "POST", hs2.URL+vars, key("a1"), `{"op":"add","value":5}`); resp.StatusCode != 200 {
		t.Fatalf("add on n2: %d %s", resp.StatusCode, body)
	}
	// n1 dies after journaling the intent of a2.
	req, _ := http.NewRequest("POST", hs1.URL+vars, strings.NewReader(`{"op":"add","value":7}`))
	req.Header.Set("Idempotency-Key", `"a2"`)
	// A fresh connection: net/http would resend a request with an
	// Idempotency-Key on a reused connection that broke.
	once := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := once.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("n1 answered %d after it died", resp.StatusCode)
	}
	// While n1 is not recovered, a retry is refused with 503, not applied.
	if resp, body := do(t, "POST", hs2.URL+vars, key("a2"), `{"op":"add","value":7}`); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("retry during recovery: %d %s", resp.StatusCode, body)
	}
	if st, err := st2.ReplaySlot(context.Background(), 1); err != nil || st.Records != 1 {
		t.Fatalf("replay: %+v %v", st, err)
	}
	b.recovered(1, "n1/1")
	c.set(m1.self, session.OwnerRecovered)
	resp, body = do(t, "POST", hs2.URL+vars, key("a2"), `{"op":"add","value":7}`)
	if resp.StatusCode != 200 || resp.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(body, `"value":12`) {
		t.Fatalf("retry after recovery: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := do(t, "GET", hs2.URL+"/api/v1/sessions/"+id, nil, ""); !strings.Contains(body, `"n":12`) || !strings.Contains(body, `"version":3`) {
		t.Fatalf("session after recovery: %d %s", resp.StatusCode, body)
	}
	if err := session.NewEngine(cfg.Layout).Check(st2); err != nil {
		t.Fatal(err)
	}
	rep, err := st2.Check(context.Background())
	if err != nil || rep.Err() != nil {
		t.Fatalf("store check: %v %v", err, rep.Err())
	}
}

// A node dies holding the keys directory's lock (it journaled a request
// last): until its recovery releases the lock, a survivor answers a
// mutating request 503 with Retry-After within about RecoveryWait, nothing
// journaled, instead of holding it for the whole recovery; after the
// recovery the same request goes through, applied once.
func TestDeadNodesLockAnswered503WithinRecoveryWait(t *testing.T) {
	t.Parallel()
	b := newStoreBackend(t)
	c := newCluster()
	cfg := testConfig(t)
	st1 := b.openStore(t, 1, "n1/1", cfg)
	st2 := b.openStore(t, 2, "n2/1", cfg)
	m1 := &member{c: c, self: session.Owner{Node: "n1", Incarnation: "1"}}
	m2 := &member{c: c, self: session.Owner{Node: "n2", Incarnation: "1"}}
	c.set(m1.self, session.OwnerLive)
	c.set(m2.self, session.OwnerLive)
	var hs []*httptest.Server
	for i, x := range []struct {
		st *store.Store
		m  *member
	}{{st1, m1}, {st2, m2}} {
		srv, err := NewServer(cfg, FromStore(x.st), x.m)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, httptest.NewServer(srv.Handler()))
		defer hs[i].Close()
	}
	id := createSession(t, hs[1].URL, "c1")
	vars := "/api/v1/sessions/" + id + "/vars/n"
	if resp, body := do(t, "POST", hs[0].URL+vars, key("a1"), `{"op":"add","value":5}`); resp.StatusCode != 200 {
		t.Fatalf("add on n1: %d %s", resp.StatusCode, body)
	}
	// n1 dies with the session's and the keys directory's locks.
	b.fence(1, "n1/1")
	c.set(m1.self, session.OwnerRecovering)
	start := time.Now()
	resp, body := do(t, "POST", hs[1].URL+vars, key("a2"), `{"op":"add","value":7}`)
	took := time.Since(start)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("request during the recovery: %d %s", resp.StatusCode, body)
	}
	if took > 5*time.Second {
		t.Fatalf("503 after %v (RecoveryWait %v): held for the recovery", took, cfg.RecoveryWait)
	}
	if _, err := st2.ReplaySlot(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	b.recovered(1, "n1/1")
	c.set(m1.self, session.OwnerRecovered)
	if resp, body := do(t, "POST", hs[1].URL+vars, key("a2"), `{"op":"add","value":7}`); resp.StatusCode != 200 || !strings.Contains(body, `"value":12`) {
		t.Fatalf("after the recovery: %d %s", resp.StatusCode, body)
	}
}
