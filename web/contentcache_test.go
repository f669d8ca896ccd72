package web

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web/session"
)

// countingFS counts the files opened through it.
type countingFS struct {
	fs.StatFS
	opens atomic.Int64
}

func (c *countingFS) Open(name string) (fs.File, error) {
	c.opens.Add(1)
	return c.StatFS.Open(name)
}

// A cached file is answered from memory while its identity holds, and read
// anew once the file changed; a file above MaxFile is read at each request.
func TestContentCacheServesUntilTheFileChanges(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "a.txt")
	os.WriteFile(p, []byte("first"), 0o644)
	os.WriteFile(filepath.Join(root, "big.txt"), bytes.Repeat([]byte("x"), 5000), 0o644)
	fsys := &countingFS{StatFS: os.DirFS(root).(fs.StatFS)}
	hs := httptest.NewServer(ContentHandler(fsys, nil, ContentCache{Bytes: 1 << 20, MaxFile: 4096}))
	defer hs.Close()
	for range 5 {
		if _, body := do(t, "GET", hs.URL+"/a.txt", nil, ""); body != "first" {
			t.Fatalf("got %q", body)
		}
	}
	if n := fsys.opens.Load(); n != 1 {
		t.Fatalf("%d opens for 5 GETs of an unchanged file, want 1", n)
	}
	// The same size, another modification time: read anew.
	os.WriteFile(p, []byte("again"), 0o644)
	later := time.Now().Add(time.Hour)
	os.Chtimes(p, later, later)
	if _, body := do(t, "GET", hs.URL+"/a.txt", nil, ""); body != "again" {
		t.Fatalf("after the change: %q", body)
	}
	// Renamed over: another inode.
	os.WriteFile(p+".new", []byte("third"), 0o644)
	os.Rename(p+".new", p)
	if _, body := do(t, "GET", hs.URL+"/a.txt", nil, ""); body != "third" {
		t.Fatalf("after the rename: %q", body)
	}
	before := fsys.opens.Load()
	for range 3 {
		do(t, "GET", hs.URL+"/big.txt", nil, "")
	}
	if n := fsys.opens.Load() - before; n != 3 {
		t.Fatalf("%d opens for 3 GETs of a file above MaxFile, want 3", n)
	}
}

// The cache keeps within its budget.
func TestContentCacheBudget(t *testing.T) {
	c := newFileCache(ContentCache{Bytes: 10_000, MaxFile: 4000})
	for i := range 20 {
		c.put(fmt.Sprint(i), &cachedFile{data: make([]byte, 3000)})
		if c.bytes > c.max {
			t.Fatalf("after %d files: %d bytes cached, budget %d", i+1, c.bytes, c.max)
		}
	}
	var sum int64
	for _, f := range c.files {
		sum += int64(len(f.data))
	}
	if sum != c.bytes || len(c.files) != 3 {
		t.Fatalf("%d files of %d bytes, counted %d", len(c.files), sum, c.bytes)
	}
	if newFileCache(ContentCache{}) != nil {
		t.Fatal("a zero ContentCache makes a cache")
	}
}

// On the real store, two nodes serving from their caches: a file renamed
// over on one node, or rewritten in place with the same size, is served
// whole and new by both as soon as the change returned.
func TestContentCacheCoherentOnStore(t *testing.T) {
	urls, writer := serveOnStore(t, 2)
	page := func(round int) []byte { return bytes.Repeat([]byte{byte('a' + round%26)}, 6000) }
	if err := writer.WriteFile("site/page.html", page(0), 0o644); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 12; round++ {
		for _, u := range urls { // both caches hold the old page
			if _, body := do(t, "GET", u+"/page.html", nil, ""); body != string(page(round-1)) {
				t.Fatalf("round %d: %s served %d bytes of %q before the change", round, u, len(body), body[:1])
			}
		}
		if round%2 == 0 {
			if err := writer.WriteFile("site/page.html.tmp", page(round), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := writer.Rename("site/page.html.tmp", "site/page.html"); err != nil {
				t.Fatal(err)
			}
		} else if err := writer.WriteFile("site/page.html", page(round), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, u := range urls {
			if _, body := do(t, "GET", u+"/page.html", nil, ""); body != string(page(round)) {
				t.Fatalf("round %d: %s served %d bytes of %q, not the new page", round, u, len(body), body[:1])
			}
		}
	}
	if err := writer.Remove("site/page.html"); err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		if resp, _ := do(t, "GET", u+"/page.html", nil, ""); resp.StatusCode != 404 {
			t.Fatalf("%s: removed page answered %d", u, resp.StatusCode)
		}
	}
}

// serveOnStore starts web nodes on slots 1..n of one store (each over
// HTTP on a loopback port) and opens slot n+1 for a writer of the site
// beside them; it returns the nodes' base URLs and the writer.
func serveOnStore(t *testing.T, n int) ([]string, *store.Store) {
	t.Helper()
	b := newStoreBackend(t)
	cfg := testConfig(t)
	c := newCluster()
	var urls []string
	for slot := 1; slot <= n; slot++ {
		st := b.open(t, slot, fmt.Sprintf("n%d/1", slot), cfg)
		m := &member{c: c, self: session.Owner{Node: fmt.Sprintf("n%d", slot), Incarnation: "1"}}
		c.set(m.self, session.OwnerLive)
		srv, err := NewServer(cfg, st, m)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		urls = append(urls, hs.URL)
	}
	return urls, b.openStore(t, n+1, fmt.Sprintf("n%d/1", n+1), cfg)
}

// discardWriter is a ResponseWriter that keeps nothing but the headers.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

// The handler's own cost per GET of a small cached file (the HTTP server's
// and the store's are not in it): go test -bench ContentCached -benchmem.
func BenchmarkContentCached(b *testing.B) {
	root := b.TempDir()
	os.WriteFile(filepath.Join(root, "1k.bin"), make([]byte, 1024), 0o644)
	h := ContentHandler(os.DirFS(root), nil, DefaultConfig().ContentCache)
	req := httptest.NewRequest("GET", "/1k.bin", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// The same from the store (one node, in-memory device): the stat of each
// request is the store's.
func BenchmarkContentCachedOnStore(b *testing.B) {
	dev, err := blockdev.NewMem(4096*store.BlockSize, 512)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Format(context.Background(), dev, store.FormatOptions{Slots: 2}); err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(context.Background(), store.DefaultConfig(dev, 0, store.NewMemLocks().Node("n0")))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	st.MkdirAll("site/docs", 0o755)
	if err := st.WriteFile("site/docs/1k.bin", make([]byte, 1024), 0o644); err != nil {
		b.Fatal(err)
	}
	fsys, _ := subTree(st, "site")
	h := ContentHandler(fsys, nil, DefaultConfig().ContentCache)
	req := httptest.NewRequest("GET", "/docs/1k.bin", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// The headers a cached file is answered with (ETag, Content-Length,
// Last-Modified, Content-Type) are made once per cached entry; a file
// replaced by rename on another node is answered on every node with the
// new file's headers, and the old ETag no longer matches.
func TestCachedHeadersFollowReplacementOnStore(t *testing.T) {
	urls, writer := serveOnStore(t, 2)
	// No extension: the type is sniffed from the content.
	versions := []struct {
		body  string
		mtime time.Time
		ctype string
	}{
		{"<!DOCTYPE html><p>" + strings.Repeat("a", 3000), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "text/html; charset=utf-8"},
		{strings.Repeat("plain text ", 100), time.Date(2026, 6, 7, 8, 9, 10, 0, time.UTC), "text/plain; charset=utf-8"},
	}
	var oldTag string
	for i, v := range versions {
		if err := writer.WriteFile("site/data.tmp", []byte(v.body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writer.Chtimes("site/data.tmp", v.mtime, v.mtime); err != nil {
			t.Fatal(err)
		}
		if err := writer.Rename("site/data.tmp", "site/data"); err != nil {
			t.Fatal(err)
		}
		for _, u := range urls {
			for range 2 { // read into the cache, then from it
				resp, body := do(t, "GET", u+"/data", nil, "")
				if resp.StatusCode != 200 || body != v.body {
					t.Fatalf("version %d from %s: %d, %d bytes", i, u, resp.StatusCode, len(body))
				}
				h := resp.Header
				if h.Get("Content-Length") != strconv.Itoa(len(v.body)) || h.Get("Content-Type") != v.ctype ||
					h.Get("Last-Modified") != v.mtime.Format(http.TimeFormat) || h.Get("Accept-Ranges") != "bytes" {
					t.Fatalf("version %d from %s: headers %v", i, u, h)
				}
				tag := h.Get("ETag")
				if tag == "" || tag == oldTag {
					t.Fatalf("version %d from %s: ETag %q (the old one %q)", i, u, tag, oldTag)
				}
				if oldTag != "" {
					if resp, body := do(t, "GET", u+"/data", map[string]string{"If-None-Match": oldTag}, ""); resp.StatusCode != 200 || body != v.body {
						t.Fatalf("version %d from %s: If-None-Match of the old ETag: %d", i, u, resp.StatusCode)
					}
				}
				if resp, _ := do(t, "GET", u+"/data", map[string]string{"If-None-Match": tag}, ""); resp.StatusCode != http.StatusNotModified {
					t.Fatalf("version %d from %s: If-None-Match of its ETag: %d", i, u, resp.StatusCode)
				}
			}
		}
		resp, _ := do(t, "GET", urls[0]+"/data", nil, "")
		oldTag = resp.Header.Get("ETag")
	}
}

// Over HTTP/2 a cached file is answered with a Date of the current second,
// as net/http would add it.
func TestCachedAnswerDateOverHTTP2(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "a.txt"), []byte("hello"), 0o644)
	hs := httptest.NewUnstartedServer(ContentHandler(os.DirFS(root), nil, ContentCache{Bytes: 1 << 20, MaxFile: 4096}))
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	client := hs.Client()
	for range 3 {
		before := time.Now().Truncate(time.Second)
		resp, err := client.Get(hs.URL + "/a.txt")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		after := time.Now()
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s", resp.Proto)
		}
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil || len(resp.Header["Date"]) != 1 || date.Before(before) || date.After(after) {
			t.Fatalf("Date %q (%v) not within [%v, %v]", resp.Header["Date"], err, before, after)
		}
	}
}
