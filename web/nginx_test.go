package web

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/testutil"
)

// nginxBinary finds Debian's nginx (installed by fixtures/setup.sh).
func nginxBinary(t testing.TB) string {
	for _, p := range []string{"/usr/sbin/nginx", "nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("nginx is not installed (fixtures/setup.sh installs it)")
	return ""
}

// startNginx runs a private nginx serving root on a listener this test
// bound to port 0 and hands over (nginx inherits listening sockets named in
// its NGINX environment variable; only a master process does that without
// crashing). It is stopped by PID at cleanup.
func startNginx(t testing.TB, root string) string {
	t.Helper()
	bin := nginxBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	dir := t.TempDir()
	user := ""
	if os.Geteuid() == 0 {
		// A root master would run its worker as nobody, who cannot read
		// the test's private directories.
		user = "user root;\n"
	}
	conf := user + fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s;
		root %[3]s;
		index index.html;
	}
}
`, dir, lf.Name(), root)
	// lf.Name() is not the address; write the real one.
	conf = strings.Replace(conf, "listen "+lf.Name(), "listen "+ln.Addr().String(), 1)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", cf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.ExtraFiles = []*os.File{lf} // fd 3
	cmd.Env = append(os.Environ(), "NGINX=3;")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// SIGTERM makes the master stop its worker and exit ("fast
		// shutdown"); SIGKILL only if it does not.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("nginx (pid %d) ignored SIGTERM", cmd.Process.Pid)
		}
	})
	base := "http://" + ln.Addr().String()
	testutil.WaitFor(t, 10*time.Second, "nginx to answer", func() bool {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited: %s %s", out.String(), log)
		default:
		}
		resp, err := (&http.Client{Timeout: time.Second}).Get(base + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return base
}

// answer is what the comparison looks at in a response.
type answer struct {
	Status        int
	ContentType   string
	ContentLength string
	ContentRange  string
	LastModified  string
	HasETag       bool
	Location      string
	Body          string
}

func fetch(t testing.TB, method, url string, hdr map[string]string) (answer, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	a := answer{Status: resp.StatusCode, ContentRange: resp.Header.Get("Content-Range"),
		LastModified: resp.Header.Get("Last-Modified"), HasETag: resp.Header.Get("ETag") != ""}
	if resp.StatusCode < 300 {
		a.ContentType = mt
		a.ContentLength = resp.Header.Get("Content-Length")
		a.Body = string(b)
	}
	switch resp.StatusCode {
	case http.StatusNotModified:
		// RFC 9110 section 15.4.5 requires ETag on a 304, not
		// Last-Modified; net/http leaves it out, nginx sends it.
		a.LastModified = ""
	case http.StatusPreconditionFailed:
		// Validators on a 412 are optional; net/http sends them.
		a.LastModified, a.HasETag = "", false
	}
	if a.ContentType == "application/javascript" {
		// RFC 9239 made text/javascript the type; Debian's nginx table
		// still has the obsolete one.
		a.ContentType = "text/javascript"
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		// nginx writes an absolute URL, Go a path: compare the path.
		if i := strings.Index(loc, "://"); i >= 0 {
			loc = loc[i+3:]
			loc = loc[strings.IndexByte(loc, '/'):]
		}
		a.Location = loc
	}
	if mt == "multipart/byteranges" {
		// Boundaries differ: compare the parts.
		a.ContentLength = ""
		mr := multipart.NewReader(bytes.NewReader(b), params["boundary"])
		var parts []string
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			pb, _ := io.ReadAll(p)
			pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			parts = append(parts, pt+" "+p.Header.Get("Content-Range")+" "+string(pb))
		}
		a.Body = strings.Join(parts, "\n")
	}
	return a, resp.Header
}

// Conditional and range requests answered like nginx answers them for the
// same files: status, type, length, range, Last-Modified, ETag presence,
// redirect target and body.
func TestContentLikeNginx(t *testing.T) {
	root := t.TempDir()
	big := make([]byte, 100_000)
	rand.Read(big)
	files := map[string][]byte{
		"index.html":      []byte("<!doctype html><title>home</title>"),
		"style.css":       []byte("body { color: #333 }\n"),
		"app.js":          []byte("console.log(1)\n"),
		"logo.png":        append([]byte("\x89PNG\r\n\x1a\n"), big[:300]...),
		"big.bin":         big,
		"docs/index.html": []byte("<!doctype html><title>docs</title>"),
		"notes.txt":       []byte("plain text\n"),
	}
	mtime := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for name, data := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	ng := startNginx(t, root)
	hs := httptest.NewServer(ContentHandler(os.DirFS(root)))
	defer hs.Close()

	lm := mtime.Format(http.TimeFormat)
	older := mtime.Add(-time.Hour).Format(http.TimeFormat)
	type tc struct {
		method, path string
		hdr          map[string]string
	}
	// Each server's own ETag for big.bin, for the conditional cases.
	_, ngHdr := fetch(t, "GET", ng+"/big.bin", nil)
	_, shHdr := fetch(t, "GET", hs.URL+"/big.bin", nil)
	own := map[string]string{ng: ngHdr.Get("ETag"), hs.URL: shHdr.Get("ETag")}
	cases := []tc{
		{"GET", "/", nil}, {"GET", "/index.html", nil}, {"GET", "/style.css", nil}, {"GET", "/app.js", nil},
		{"GET", "/logo.png", nil}, {"GET", "/notes.txt", nil}, {"GET", "/big.bin", nil}, {"HEAD", "/big.bin", nil},
		{"GET", "/docs/", nil}, {"GET", "/docs", nil}, {"GET", "/missing.html", nil},
		{"GET", "/big.bin", map[string]string{"If-None-Match": "OWN"}},
		{"HEAD", "/big.bin", map[string]string{"If-None-Match": "OWN"}},
		{"GET", "/big.bin", map[string]string{"If-None-Match": `"other"`}},
		{"GET", "/big.bin", map[string]string{"If-None-Match": "*"}},
		{"GET", "/big.bin", map[string]string{"If-None-Match": `"a", OWN`}},
		{"GET", "/big.bin", map[string]string{"If-Modified-Since": lm}},
		{"GET", "/big.bin", map[string]string{"If-Modified-Since": older}},
		{"GET", "/big.bin", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": lm}},
		{"GET", "/big.bin", map[string]string{"If-Match": `"other"`}},
		{"GET", "/big.bin", map[string]string{"If-Match": "OWN"}},
		{"GET", "/big.bin", map[string]string{"If-Unmodified-Since": older}},
		{"GET", "/big.bin", map[string]string{"If-Unmodified-Since": lm}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=0-99"}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=99990-"}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=-10"}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=99990-200000"}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=0-9,100-109,-5"}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=200000-"}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=0-9", "If-Range": "OWN"}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=0-9", "If-Range": `"other"`}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=0-9", "If-Range": lm}},
		{"GET", "/big.bin", map[string]string{"Range": "bytes=0-9", "If-Range": older}},
		{"HEAD", "/big.bin", map[string]string{"Range": "bytes=0-9"}},
	}
	for _, c := range cases {
		var got [2]answer
		for i, base := range []string{ng, hs.URL} {
			hdr := map[string]string{}
			for k, v := range c.hdr {
				hdr[k] = strings.ReplaceAll(v, "OWN", own[base])
			}
			got[i], _ = fetch(t, c.method, base+c.path, hdr)
		}
		if got[0] != got[1] {
			t.Errorf("%s %s %v:\nnginx %+v\nshoal %+v", c.method, c.path, c.hdr, short(got[0]), short(got[1]))
		}
	}
	// Methods nginx refuses on static files.
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		a, _ := fetch(t, m, ng+"/index.html", nil)
		b, _ := fetch(t, m, hs.URL+"/index.html", nil)
		if a.Status != b.Status {
			t.Errorf("%s: nginx %d, shoal %d", m, a.Status, b.Status)
		}
	}
}

func short(a answer) answer {
	if len(a.Body) > 64 {
		a.Body = fmt.Sprintf("%d bytes %q...", len(a.Body), a.Body[:32])
	}
	return a
}
