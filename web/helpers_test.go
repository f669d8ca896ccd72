package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/web/internal/memstore"
	"github.com/shoal-ha/shoal/web/session"
)

// cluster is what the in-process tests share: one volume, the membership
// every node consults, and the nodes.
type cluster struct {
	vol *memstore.Volume
	mu  sync.Mutex
	// states of every incarnation ever seen; missing means recovered.
	states map[session.Owner]session.OwnerState
}

func newCluster() *cluster {
	return &cluster{vol: memstore.New(time.Now), states: map[session.Owner]session.OwnerState{}}
}

func (c *cluster) set(o session.Owner, s session.OwnerState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.states[o] = s
}

func (c *cluster) state(o session.Owner) session.OwnerState {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.states[o]; ok {
		return s
	}
	return session.OwnerRecovered
}

// member is one node's view: its own incarnation and the cluster's states.
type member struct {
	c    *cluster
	mu   sync.Mutex
	self session.Owner
}

func (m *member) Self() session.Owner {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.self
}

func (m *member) State(o session.Owner) session.OwnerState { return m.c.state(o) }

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = testlog.New(t, "web")
	cfg.RecoveryWait = 200 * time.Millisecond
	return cfg
}

// newTestServer serves slot's view of c's volume through httptest.
func newTestServer(t testing.TB, c *cluster, slot int, cfg Config) (*Server, *httptest.Server, *member) {
	t.Helper()
	m := &member{c: c, self: session.Owner{Node: "n" + string(rune('0'+slot)), Incarnation: "1"}}
	c.set(m.self, session.OwnerLive)
	s, err := NewServer(cfg, c.vol.Node(slot), m)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return s, hs, m
}

func do(t testing.TB, method, url string, hdr map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}
