package adminauth_test

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/adminauth"
)

// rig is an HTTPS server behind the guard, with the certificates of the
// cluster's CA, of a stranger's CA, and the token.
type rig struct {
	url                    string
	admin, readOnly, other *tls.Config // client configurations
	anon                   *tls.Config // trusts the server, shows no certificate
	token                  string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	ca, stranger := filepath.Join(dir, "ca"), filepath.Join(dir, "stranger")
	for _, d := range []string{ca, stranger} {
		if err := cluster.EnsureLocalCA(d); err != nil {
			t.Fatal(err)
		}
	}
	node, err := cluster.IssueCert(ca, filepath.Join(dir, "node"), "node1", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := cluster.IssueClientCert(ca, filepath.Join(dir, "ro"), "alice", []string{adminauth.ReadOnlyUnit})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := cluster.IssueCert(stranger, filepath.Join(dir, "foreign"), "mallory", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	token, created, err := adminauth.LoadOrCreateToken(dir)
	if err != nil || !created {
		t.Fatalf("token: %v created=%v", err, created)
	}
	srvTLS, err := adminauth.ServerTLS(node.CA, node.Cert, node.Key)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "status") })
	mux.HandleFunc("POST /api/leave", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "leaving") })
	mux.HandleFunc("GET /ui/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") })
	g := adminauth.Guard{Token: token, Public: adminauth.DefaultPublic}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: g.Wrap(mux), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(ln, srvTLS))
	t.Cleanup(func() { srv.Close() })

	client := func(files cluster.CertFiles, trust string) *tls.Config {
		c, err := cluster.ClientTLS(cluster.CertFiles{CA: trust, Cert: files.Cert, Key: files.Key})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return &rig{
		url: "https://" + ln.Addr().String(), token: token,
		admin: client(node, node.CA), readOnly: client(ro, node.CA), other: client(foreign, node.CA),
		anon: client(cluster.CertFiles{}, node.CA),
	}
}

func (r *rig) do(t *testing.T, c *tls.Config, method, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, r.url+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGuard(t *testing.T) {
	r := newRig(t)
	bearer := map[string]string{"Authorization": "Bearer " + r.token}
	for _, tc := range []struct {
		name         string
		c            *tls.Config
		method, path string
		hdr          map[string]string
		code         int
	}{
		{"health needs nothing", r.anon, "GET", "/healthz", nil, 200},
		{"no credentials", r.anon, "GET", "/api/status", nil, 401},
		{"no credentials, admin route", r.anon, "POST", "/api/leave", nil, 401},
		{"wrong token", r.anon, "GET", "/api/status", map[string]string{"Authorization": "Bearer " + strings.Repeat("0", 64)}, 401},
		{"token reads", r.anon, "GET", "/api/status", bearer, 200},
		{"token changes", r.anon, "POST", "/api/leave", bearer, 200},
		{"read-only reads", r.readOnly, "GET", "/api/status", nil, 200},
		{"read-only cannot leave", r.readOnly, "POST", "/api/leave", nil, 403},
		{"admin certificate leaves", r.admin, "POST", "/api/leave", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := r.do(t, tc.c, tc.method, tc.path, tc.hdr)
			if code != tc.code {
				t.Fatalf("%s %s: %d %q, want %d", tc.method, tc.path, code, body, tc.code)
			}
		})
	}
	// A certificate from another CA does not get through the handshake.
	if code, body := r.do(t, r.other, "GET", "/api/status", nil); code != 0 || !strings.Contains(body, "certificate") {
		t.Fatalf("stranger's certificate: %d %q", code, body)
	}
}

func TestTokenLoginSetsCookie(t *testing.T) {
	r := newRig(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.anon}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(r.url + "/ui/?token=" + r.token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("login: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == adminauth.TokenCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", cookie)
	}
	req, _ := http.NewRequest("GET", r.url+"/ui/", nil)
	req.AddCookie(cookie)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("with the cookie: %s", resp.Status)
	}
	if code, _ := r.do(t, r.anon, "GET", "/ui/?token=nope", nil); code != 401 {
		t.Fatalf("wrong token login: %d", code)
	}
}

func TestTokenKeptAcrossStarts(t *testing.T) {
	dir := t.TempDir()
	a, created, err := adminauth.LoadOrCreateToken(dir)
	if err != nil || !created || len(a) != 64 {
		t.Fatalf("first: %q %v %v", a, created, err)
	}
	b, created, err := adminauth.LoadOrCreateToken(dir)
	if err != nil || created || a != b {
		t.Fatalf("second: %q %v %v", b, created, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, adminauth.TokenFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	os.WriteFile(filepath.Join(dir, adminauth.TokenFile), []byte("short\n"), 0o600)
	if _, _, err := adminauth.LoadOrCreateToken(dir); err == nil {
		t.Fatal("a short token was accepted")
	}
}
