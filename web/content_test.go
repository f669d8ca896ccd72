package web

import (
	"bytes"
	"context"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/shoal-ha/shoal/web/session"
)

func populate(t testing.TB, c *cluster, files map[string]string) {
	t.Helper()
	err := c.vol.Node(9).Update(context.Background(), func(tx session.Tx) error {
		for name, data := range files {
			if err := tx.WriteFile(name, []byte(data), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMemstoreIsAnFS(t *testing.T) {
	c := newCluster()
	populate(t, c, map[string]string{"site/index.html": "<p>hi</p>", "site/a/b.css": "b{}", "web/keys/x": "{}"})
	if err := fstest.TestFS(c.vol.Node(1), "site/index.html", "site/a/b.css", "web/keys/x"); err != nil {
		t.Fatal(err)
	}
}

func TestContent(t *testing.T) {
	c := newCluster()
	big := strings.Repeat("0123456789", 1000)
	populate(t, c, map[string]string{
		"site/index.html":      "<html>home</html>",
		"site/style.css":       "body{color:red}",
		"site/docs/index.html": "<html>docs</html>",
		"site/empty/x.txt":     "x",
		"site/big.txt":         big,
		"web/sessions/secret":  `{"id":"x"}`,
		"outside.txt":          "outside",
	})
	_, hs, _ := newTestServer(t, c, 1, testConfig(t))
	u := hs.URL

	resp, body := do(t, "GET", u+"/", nil, "")
	if resp.StatusCode != 200 || body != "<html>home</html>" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	etag := resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("GET /: ETag %q Last-Modified %q", etag, resp.Header.Get("Last-Modified"))
	}
	if resp, _ := do(t, "GET", u+"/style.css", nil, ""); resp.Header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Fatalf("css type %q", resp.Header.Get("Content-Type"))
	}
	// Conditional requests.
	if resp, body := do(t, "GET", u+"/", map[string]string{"If-None-Match": etag}, ""); resp.StatusCode != 304 || body != "" {
		t.Fatalf("If-None-Match: %d %q", resp.StatusCode, body)
	}
	lm := resp.Header.Get("Last-Modified")
	if resp, _ := do(t, "GET", u+"/", map[string]string{"If-Modified-Since": lm}, ""); resp.StatusCode != 304 {
		t.Fatalf("If-Modified-Since: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", u+"/", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": lm}, ""); resp.StatusCode != 200 {
		t.Fatalf("If-None-Match wins over If-Modified-Since: %d", resp.StatusCode)
	}
	// HEAD.
	if resp, body := do(t, "HEAD", u+"/big.txt", nil, ""); resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len(big)) {
		t.Fatalf("HEAD: %d %q %d", resp.StatusCode, body, resp.ContentLength)
	}
	// Ranges.
	resp, body = do(t, "GET", u+"/big.txt", map[string]string{"Range": "bytes=10-19"}, "")
	if resp.StatusCode != 206 || body != big[10:20] || resp.Header.Get("Content-Range") != "bytes 10-19/10000" {
		t.Fatalf("Range: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	bigTag := resp.Header.Get("ETag")
	if resp, body := do(t, "GET", u+"/big.txt", map[string]string{"Range": "bytes=-5", "If-Range": bigTag}, ""); resp.StatusCode != 206 || body != big[len(big)-5:] {
		t.Fatalf("If-Range matching: %d %q", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", u+"/big.txt", map[string]string{"Range": "bytes=0-4", "If-Range": `"stale"`}, ""); resp.StatusCode != 200 || body != big {
		t.Fatalf("If-Range stale: %d %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := do(t, "GET", u+"/big.txt", map[string]string{"Range": "bytes=20000-"}, ""); resp.StatusCode != 416 {
		t.Fatalf("unsatisfiable range: %d", resp.StatusCode)
	}
	resp, body = do(t, "GET", u+"/big.txt", map[string]string{"Range": "bytes=0-1,100-102"}, "")
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 206 || mt != "multipart/byteranges" {
		t.Fatalf("multi-range: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(strings.NewReader(body), params["boundary"])
	var parts []string
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		var b bytes.Buffer
		b.ReadFrom(p)
		parts = append(parts, p.Header.Get("Content-Range")+"="+b.String())
	}
	if strings.Join(parts, ";") != "bytes 0-1/10000=01;bytes 100-102/10000=012" {
		t.Fatalf("multi-range parts: %q", parts)
	}
	// Directories, missing files, methods, path tricks, internals.
	if resp, body := do(t, "GET", u+"/docs/", nil, ""); resp.StatusCode != 200 || body != "<html>docs</html>" {
		t.Fatalf("directory index: %d %q", resp.StatusCode, body)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, err := noRedirect.Get(u + "/docs"); err != nil || resp.StatusCode != 301 || resp.Header.Get("Location") != "/docs/" {
		t.Fatalf("directory without slash: %v %v", resp, err)
	}
	for path, want := range map[string]int{
		"/empty/":                 403,
		"/nope.html":              404,
		"/style.css/x":            404,
		"/../outside.txt":         400,
		"/docs/../../outside.txt": 400,
		"/%2e%2e/outside.txt":     400,
		"/..%2foutside.txt":       400,
		"/web/sessions/secret":    404,
		"/a%00b":                  400,
		"/a%5c..%5coutside.txt":   400,
	} {
		req, _ := http.NewRequest("GET", u+"/", nil)
		req.URL.Opaque = "//" + strings.TrimPrefix(u, "http://") + path
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if resp, _ := do(t, "POST", u+"/style.css", nil, "x"); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// A file replaced on one node (a new file renamed over it) is served whole
// and new by every node as soon as the replacement returned.
func TestContentReplacedEverywhere(t *testing.T) {
	c := newCluster()
	populate(t, c, map[string]string{"site/page.html": strings.Repeat("old ", 5000)})
	_, hs1, _ := newTestServer(t, c, 1, testConfig(t))
	_, hs2, _ := newTestServer(t, c, 2, testConfig(t))
	resp, _ := do(t, "GET", hs1.URL+"/page.html", nil, "")
	oldTag := resp.Header.Get("ETag")
	for i := range 20 {
		content := strings.Repeat(string(rune('a'+i%26))+"new", 3000+i)
		if err := c.vol.Node(1).WriteFile("site/page.html", []byte(content)); err != nil {
			t.Fatal(err)
		}
		for _, u := range []string{hs1.URL, hs2.URL} {
			resp, body := do(t, "GET", u+"/page.html", nil, "")
			if body != content {
				t.Fatalf("round %d: %s served %d bytes, not the new file", i, u, len(body))
			}
			if tag := resp.Header.Get("ETag"); tag == oldTag {
				t.Fatalf("round %d: ETag %s did not change", i, tag)
			}
			if resp, _ := do(t, "GET", u+"/page.html", map[string]string{"If-None-Match": oldTag}, ""); resp.StatusCode != 200 {
				t.Fatalf("round %d: old ETag still matches: %d", i, resp.StatusCode)
			}
		}
		resp, _ := do(t, "GET", hs2.URL+"/page.html", nil, "")
		oldTag = resp.Header.Get("ETag")
	}
}
