package web

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/web/session"
	"github.com/shoal-ha/shoal/web/webtest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key as PEM files
// in dir and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool, err := webtest.SelfSigned(dir)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool
}

// startTLS serves a node over TLS on a loopback port and returns its base
// URL and a pool that trusts its certificate.
func startTLS(t *testing.T, files map[string]string) (string, *x509.CertPool) {
	t.Helper()
	c := newCluster()
	populate(t, c, files)
	cfg := testConfig(t)
	var pool *x509.CertPool
	cfg.TLSCertFile, cfg.TLSKeyFile, pool = selfSigned(t, t.TempDir())
	m := &member{c: c, self: session.Owner{Node: "n1", Incarnation: "1"}}
	c.set(m.self, session.OwnerLive)
	srv, err := NewServer(cfg, c.vol.Node(1), m)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String(), pool
}

// With TLS configured, a node speaks HTTP/2 to a client that offers it
// (ALPN "h2", RFC 9113 section 3.2) and HTTP/1.1 to one that does not; the
// site and the sessions API answer the same over both.
func TestTLSNegotiatesHTTP2(t *testing.T) {
	page := strings.Repeat("<p>over TLS</p>", 100)
	base, pool := startTLS(t, map[string]string{"site/index.html": page})
	for _, tc := range []struct {
		name  string
		h2    bool
		proto string
	}{{"h2", true, "HTTP/2.0"}, {"h1", false, "HTTP/1.1"}} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: tc.h2}
			if !tc.h2 {
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			resp, err := client.Get(base + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Proto != tc.proto || resp.TLS == nil {
				t.Fatalf("answered over %s (TLS %v), want %s", resp.Proto, resp.TLS != nil, tc.proto)
			}
			if alpn := resp.TLS.NegotiatedProtocol; tc.h2 && alpn != "h2" || !tc.h2 && alpn != "http/1.1" && alpn != "" {
				t.Fatalf("ALPN %q", alpn)
			}
			if resp.StatusCode != 200 || string(body) != page || resp.Header.Get("ETag") == "" {
				t.Fatalf("GET /: %d %d bytes %v", resp.StatusCode, len(body), resp.Header)
			}
			// A conditional request and a range over the same protocol.
			req, _ := http.NewRequest("GET", base+"/index.html", nil)
			req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
			if r, err := client.Do(req); err != nil || r.StatusCode != 304 || r.Proto != tc.proto {
				t.Fatalf("If-None-Match: %v %v", err, r)
			}
			req, _ = http.NewRequest("GET", base+"/index.html", nil)
			req.Header.Set("Range", "bytes=3-12")
			r, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != 206 || string(b) != page[3:13] {
				t.Fatalf("range: %d %q", r.StatusCode, b)
			}
			// The sessions API: a create and its replay.
			for i, want := range []string{"", "true"} {
				req, _ := http.NewRequest("POST", base+"/api/v1/sessions", nil)
				req.Header.Set("Idempotency-Key", `"tls-`+tc.name+`"`)
				r, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != 201 || r.Header.Get("Idempotent-Replayed") != want || r.Proto != tc.proto {
					t.Fatalf("create %d: %d %s %v", i, r.StatusCode, r.Proto, r.Header)
				}
			}
		})
	}
}

// h2load (Debian's nghttp2-client) negotiates h2 over TLS with a node and
// gets every request answered.
func TestTLSWithH2load(t *testing.T) {
	if _, err := exec.LookPath("h2load"); err != nil {
		t.Skip("h2load is not installed (fixtures/setup.sh installs nghttp2-client)")
	}
	base, _ := startTLS(t, map[string]string{"site/a.bin": strings.Repeat("x", 16<<10)})
	out, err := exec.Command("h2load", "-n", "200", "-c", "4", "-m", "8", base+"/a.bin").CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("h2load: %v\n%s", err, text)
	}
	if !regexp.MustCompile(`(?m)^Application protocol: h2$`).MatchString(text) {
		t.Fatalf("h2load did not negotiate h2:\n%s", text)
	}
	if !regexp.MustCompile(`requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored`).MatchString(text) ||
		!regexp.MustCompile(`status codes: 200 2xx`).MatchString(text) {
		t.Fatalf("h2load's requests were not all answered 200:\n%s", text)
	}
}
