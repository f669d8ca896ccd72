package web

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/web/webtest"
)

// startNginx runs a private nginx serving root (webtest.StartNginx),
// stopped by PID at cleanup.
func startNginx(t testing.TB, root string) string {
	t.Helper()
	n, err := webtest.StartNginx(root, t.TempDir(), 1, false)
	if errors.Is(err, webtest.ErrNoNginx) {
		t.Skip("nginx is not installed (fixtures/setup.sh installs it)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Error(err)
		}
	})
	return n.URL
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
	// The files answered from the cache and read at each request.
	for _, cache := range []ContentCache{DefaultConfig().ContentCache, {}} {
		t.Run(fmt.Sprintf("cache=%d", cache.Bytes), func(t *testing.T) {
			hs := httptest.NewServer(ContentHandler(os.DirFS(root), nil, cache))
			defer hs.Close()
			compareWithNginx(t, ng, hs.URL, mtime)
		})
	}
}

func compareWithNginx(t *testing.T, ng, shoal string, mtime time.Time) {

	lm := mtime.Format(http.TimeFormat)
	older := mtime.Add(-time.Hour).Format(http.TimeFormat)
	type tc struct {
		method, path string
		hdr          map[string]string
	}
	// Each server's own ETag for big.bin, for the conditional cases.
	_, ngHdr := fetch(t, "GET", ng+"/big.bin", nil)
	_, shHdr := fetch(t, "GET", shoal+"/big.bin", nil)
	own := map[string]string{ng: ngHdr.Get("ETag"), shoal: shHdr.Get("ETag")}
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
		for i, base := range []string{ng, shoal} {
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
		b, _ := fetch(t, m, shoal+"/index.html", nil)
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
