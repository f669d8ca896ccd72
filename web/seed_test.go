package web

import (
	"context"
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
	if n, err := SeedSite(context.Background(), c.vol.Node(1), "site", fstest.MapFS{"x.html": {Data: []byte("x")}}); err != nil || n != 0 {
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
	n, err := SeedSite(context.Background(), st, "site", src)
	if err != nil || n != 4 {
		t.Fatalf("seed: %d %v", n, err)
	}
	want := []string{"site/index.html", "site/z.css", "site/a/b.html", "site/a/deep/page.html"}
	if strings.Join(st.written, " ") != strings.Join(want, " ") {
		t.Fatalf("written in order %v, want %v", st.written, want)
	}
}
