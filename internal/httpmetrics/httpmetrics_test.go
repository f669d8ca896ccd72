package httpmetrics

import (
	"net/http"
	"net/http/httptest"
	"sync"
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

// Answers of many connections record at once: none is lost from the
// counters, and the recent window holds only recorded times.
func TestConcurrentAnswers(t *testing.T) {
	r := New()
	const workers, each = 4, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				code := 200
				if i%10 == 0 {
					code = 404 + w%2*100 // 404 or 504
				}
				r.observe(code, time.Duration(w+1)*time.Millisecond)
			}
		}()
	}
	wg.Wait()
	total := 0.0
	for _, code := range []string{"200", "404", "504"} {
		total += testutil.ToFloat64(r.requests.WithLabelValues(code))
	}
	if req, errs := r.Counts(); req != workers*each || total != workers*each || errs != workers/2*each/10 {
		t.Fatalf("counts %d requests, %v by code, %d errors", req, total, errs)
	}
	if p := r.P99(); p < time.Millisecond || p > workers*time.Millisecond {
		t.Fatalf("p99 %s outside the recorded times", p)
	}
}
