package httpmetrics

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRecorder(t *testing.T) {
	r := New()
	reg := prometheus.NewRegistry()
	if err := r.Register(reg); err != nil {
		t.Fatal(err)
	}
	h := r.Wrap(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/fail":
			http.Error(w, "no", http.StatusServiceUnavailable)
		case "/missing":
			http.NotFound(w, req)
		default:
			w.Write([]byte("ok"))
		}
	}))
	for _, p := range []string{"/a", "/a", "/fail", "/missing"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	if req, errs := r.Counts(); req != 4 || errs != 1 {
		t.Fatalf("counts %d %d", req, errs)
	}
	if got := testutil.ToFloat64(r.requests.WithLabelValues("200")); got != 2 {
		t.Fatalf("200s: %v", got)
	}
	if got := testutil.ToFloat64(r.requests.WithLabelValues("503")); got != 1 {
		t.Fatalf("503s: %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "shoal_http_request_duration_seconds"); err != nil || n != 1 {
		t.Fatalf("histogram: %d %v", n, err)
	}
}

func TestP99(t *testing.T) {
	r := New()
	if r.P99() != 0 {
		t.Fatal("p99 before any request")
	}
	for i := 1; i <= 100; i++ {
		r.observe(200, time.Duration(i)*time.Millisecond)
	}
	if got := r.P99(); got != 99*time.Millisecond {
		t.Fatalf("p99 of 1..100 ms: %s", got)
	}
	// Only the last 2048 count.
	for i := 0; i < 3000; i++ {
		r.observe(200, time.Millisecond)
	}
	if got := r.P99(); got != time.Millisecond {
		t.Fatalf("p99 after 3000 fast requests: %s", got)
	}
}
