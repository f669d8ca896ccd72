package web

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/shoal-ha/shoal/web/session"
)

// The demo's site is loaded into an empty content root on the first start
// and served; a second start does not load it again.
func TestSeedAndCORS(t *testing.T) {
	c := newCluster()
	cfg := testConfig(t)
	cfg.SeedDir = "../fixtures/site"
	cfg.AllowOrigins = []string{"http://127.0.0.1:8080"}
	srv, hs, _ := newTestServer(t, c, 1, cfg)
	// Serve seeds in the background; the test server does not call it.
	srv.seed()
	for _, p := range []string{"/", "/counter.html", "/shoal.css", "/shoal.svg"} {
		if resp, _ := do(t, "GET", hs.URL+p, nil, ""); resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", p, resp.StatusCode)
		}
	}
	if n, err := SeedSite(context.Background(), c.vol.Node(1), nil, "site", fstest.MapFS{"x.html": {Data: []byte("x")}}); err != nil || n != 0 {
		t.Fatalf("second seed: %d %v", n, err)
	}
	// A page from node 1's origin calls node 2's API.
	req, _ := http.NewRequest("OPTIONS", hs.URL+"/api/v1/sessions", nil)
	req.Header.Set("Origin", "http://127.0.0.1:8080")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "idempotency-key, content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "http://127.0.0.1:8080" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Idempotency-Key") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = do(t, "POST", hs.URL+"/api/v1/sessions", map[string]string{"Idempotency-Key": `"s1"`, "Origin": "http://127.0.0.1:8080"}, "")
	if resp.StatusCode != 201 || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Idempotent-Replayed") {
		t.Fatalf("cross-origin create: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = do(t, "POST", hs.URL+"/api/v1/sessions", map[string]string{"Idempotency-Key": `"s2"`, "Origin": "http://evil.example"}, "")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("origin not configured got CORS headers: %v", resp.Header)
	}
	bad := testConfig(t)
	bad.AllowOrigins = []string{"127.0.0.1:8080"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "AllowOrigins") {
		t.Fatalf("Validate: %v", err)
	}
}

// orderStore records the order in which files are written.
type orderStore struct {
	Store
	written []string
}

type orderTx struct {
	session.Tx
	s *orderStore
}

func (t orderTx) WriteFile(name string, data []byte, perm fs.FileMode) error {
	t.s.written = append(t.s.written, name)
	return t.Tx.WriteFile(name, data, perm)
}

func (s *orderStore) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	return s.Store.Update(ctx, func(tx session.Tx) error { return fn(orderTx{tx, s}) })
}

// A directory's own files load before its subdirectories, so the front
// page is served while a deep tree still loads.
func TestSeedFrontPagesFirst(t *testing.T) {
	c := newCluster()
	st := &orderStore{Store: c.vol.Node(1)}
	src := fstest.MapFS{
		"a/deep/page.html": {Data: []byte("deep")},
		"a/b.html":         {Data: []byte("b")},
		"index.html":       {Data: []byte("front")},
		"z.css":            {Data: []byte("css")},
	}
	n, err := SeedSite(context.Background(), st, nil, "site", src)
	if err != nil || n != 4 {
		t.Fatalf("seed: %d %v", n, err)
	}
	// The marker of a load under way first, then the front pages.
	want := []string{"site.seeding", "site/index.html", "site/z.css", "site/a/b.html", "site/a/deep/page.html"}
	if strings.Join(st.written, " ") != strings.Join(want, " ") {
		t.Fatalf("written in order %v, want %v", st.written, want)
	}
}

// A site load cut short (its node stopped) is resumed by the next load,
// on any node; a finished one is not loaded again.
func TestSeedCutShortIsResumed(t *testing.T) {
	c := newCluster()
	st := c.vol.Node(1)
	src := fstest.MapFS{}
	for i := range 20 {
		src[fmt.Sprintf("p%02d.html", i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf("page %d", i))}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cut := &cutStore{Store: st, after: 5, cancel: cancel}
	if n, err := SeedSite(ctx, cut, nil, "site", src); err == nil || n >= 20 {
		t.Fatalf("cut load: %d files, %v", n, err)
	}
	if ents, _ := fs.ReadDir(st, "site"); len(ents) == 0 {
		t.Fatal("the cut load left nothing: the test cut it too early")
	}
	n, err := SeedSite(context.Background(), c.vol.Node(2), nil, "site", src)
	if err != nil || n != 20 {
		t.Fatalf("resumed load: %d files, %v; want 20", n, err)
	}
	for name, f := range src {
		if b, err := fs.ReadFile(st, "site/"+name); err != nil || string(b) != string(f.Data) {
			t.Fatalf("%s: %q %v", name, b, err)
		}
	}
	if _, err := fs.Stat(st, "site.seeding"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("marker after a whole load: %v", err)
	}
	if n, err := SeedSite(context.Background(), st, nil, "site", src); err != nil || n != 0 {
		t.Fatalf("load after a whole one: %d %v", n, err)
	}
}

// cutStore cancels the load after `after` file transactions (the marker's
// first) have committed.
type cutStore struct {
	Store
	after  int
	n      int
	cancel func()
}

func (s *cutStore) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	if s.n > s.after {
		s.cancel()
		return ctx.Err()
	}
	s.n++
	return s.Store.Update(ctx, fn)
}

// While the incarnation that started a site load is live, the other nodes
// leave the load to it (the nodes of a cluster start at once: each would
// copy the whole site, moving the content directory's locks between them
// for as long); once it is dead, the next load on another node resumes it.
func TestSeedLeftToTheLiveLoader(t *testing.T) {
	c := newCluster()
	a := &member{c: c, self: session.Owner{Node: "a", Incarnation: "1"}}
	b := &member{c: c, self: session.Owner{Node: "b", Incarnation: "1"}}
	c.set(a.self, session.OwnerLive)
	c.set(b.self, session.OwnerLive)
	src := fstest.MapFS{}
	for i := range 20 {
		src[fmt.Sprintf("p%02d.html", i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf("page %d", i))}
	}
	// a's load stands part way (the marker names a; a is still live).
	ctx, cancel := context.WithCancel(context.Background())
	cut := &cutStore{Store: c.vol.Node(1), after: 5, cancel: cancel}
	if n, err := SeedSite(ctx, cut, a, "site", src); err == nil || n >= 20 {
		t.Fatalf("a's load: %d files, %v", n, err)
	}
	st := c.vol.Node(2)
	written := &seedCountingStore{Store: st}
	if n, err := SeedSite(context.Background(), written, b, "site", src); err != nil || n != 0 {
		t.Fatalf("b's load while a loads: %d files, %v; want 0, nil", n, err)
	}
	if written.files != 0 {
		t.Fatalf("b wrote %d files while a loads", written.files)
	}
	c.set(a.self, session.OwnerRecovered)
	n, err := SeedSite(context.Background(), st, b, "site", src)
	if err != nil || n != 20 {
		t.Fatalf("b's load once a is dead: %d files, %v; want 20", n, err)
	}
	if _, err := fs.Stat(st, "site.seeding"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("marker after the whole load: %v", err)
	}
}

// seedCountingStore counts the transactions that write a file other than the
// load's marker.
type seedCountingStore struct {
	Store
	files int
}

func (s *seedCountingStore) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	return s.Store.Update(ctx, func(tx session.Tx) error { return fn(&seedCountingTx{Tx: tx, s: s}) })
}

type seedCountingTx struct {
	session.Tx
	s *seedCountingStore
}

func (t *seedCountingTx) WriteFile(name string, data []byte, perm fs.FileMode) error {
	if !strings.HasSuffix(name, ".seeding") {
		t.s.files++
	}
	return t.Tx.WriteFile(name, data, perm)
}
