package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// newTestServer serves the dashboard of st, on st's clock.
func newTestServer(t *testing.T, st *story) (*Server, *httptest.Server) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Source = st
	cfg.Clock = st.clk
	ui, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", ui)
	mux.Handle("/ui", ui)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ui, ts
}

// readEvent reads one server-sent event's data.
func readEvent(t *testing.T, r *bufio.Reader) Snapshot {
	t.Helper()
	var data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "data: ") {
			data = strings.TrimPrefix(line, "data: ")
		}
		if line == "" && data != "" {
			break
		}
	}
	var s Snapshot
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		t.Fatalf("event data: %v", err)
	}
	return s
}

func TestServerStreamsSnapshots(t *testing.T) {
	st := newStory(t0)
	ui, ts := newTestServer(t, st)

	resp, err := http.Get(ts.URL + "/ui/snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("snapshot before the first sample: %s", resp.Status)
	}
	ui.Sample(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/ui/events", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	if s := readEvent(t, r); len(s.Nodes) != 3 {
		t.Fatalf("first event: %+v", s.Nodes)
	}
	st.kill("node3")
	ui.Sample(context.Background())
	if s := readEvent(t, r); s.Nodes[2].State != StateDown {
		t.Fatalf("second event: %+v", s.Nodes)
	}
}

func TestServerRunStopsStreams(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Source = newStory(t0)
	cfg.Interval = 100 * time.Millisecond
	cfg.Window = time.Minute
	ui, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(ui)
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- ui.Run(ctx) }()
	resp, err := http.Get(ts.URL + "/ui/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	readEvent(t, r)
	readEvent(t, r) // the ticker keeps sampling
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of its context's end")
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("event stream still open after Run returned")
	}
	if err := ui.Run(context.Background()); err != ErrStopped {
		t.Fatalf("second Run: %v", err)
	}
}

func TestServerPageAndHeaders(t *testing.T) {
	_, ts := newTestServer(t, newStory(t0))
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(ts.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("/ui: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/app.js": "javascript", "/ui/style.css": "text/css"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("%s: %s %q", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
	req, _ := http.NewRequest("POST", ts.URL+"/ui/events", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %s", resp.Status)
	}
}

// TestAssetsLoadNothingFromOutside: the embedded page names no other host
// (the SVG namespace is a name, not a fetch).
func TestAssetsLoadNothingFromOutside(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, path)
		if err != nil {
			return err
		}
		for _, m := range url.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s refers to %s", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
