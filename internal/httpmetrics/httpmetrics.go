// Package httpmetrics measures an HTTP handler for /metrics and the
// dashboard: shoal_http_requests_total{code} (answered requests by status
// code), shoal_http_request_duration_seconds (a histogram of the time to
// answer) and shoal_http_recent_p99_seconds (the 99th percentile of the
// last 2048 requests, which the dashboard shows; alerts use the
// histogram).
package httpmetrics

import (
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const recent = 2048

// Recorder measures the handlers it wraps.
type Recorder struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	p99      prometheus.GaugeFunc

	total, errors atomic.Uint64

	// byCode holds the requests counter of each status code 100-599 once
	// used: a labelled counter is looked up by hashing its label values,
	// which every answer would otherwise pay.
	byCode [600]atomic.Pointer[prometheus.Counter]

	// ring holds the last answer times (nanoseconds), slot seq%recent
	// written by the seq'th answer; next counts the answers recorded.
	// Lock-free: the answers of all connections record here.
	ring [recent]atomic.Int64
	next atomic.Uint64
}

// New returns a recorder; Register puts its metrics on a registry.
func New() *Recorder {
	r := &Recorder{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "http", Name: "requests_total",
			Help: "Requests the web tier answered, by status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shoal", Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its answer.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	r.p99 = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "shoal", Subsystem: "http", Name: "recent_p99_seconds",
		Help: "99th percentile of the answer time of the last 2048 requests (the dashboard's figure; alert on the histogram).",
	}, func() float64 { return r.P99().Seconds() })
	return r
}

// Register registers the recorder's metrics with reg.
func (r *Recorder) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{r.requests, r.duration, r.p99} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Wrap measures every request h answers.
func (r *Recorder) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, req)
		r.observe(sw.code, time.Since(start))
	})
}

func (r *Recorder) observe(code int, d time.Duration) {
	r.counter(code).Inc()
	r.duration.Observe(d.Seconds())
	r.total.Add(1)
	if code >= 500 {
		r.errors.Add(1)
	}
	seq := r.next.Add(1) - 1
	r.ring[seq%recent].Store(int64(d))
}

// counter is the requests counter of status code.
func (r *Recorder) counter(code int) prometheus.Counter {
	if code < 100 || code >= len(r.byCode) {
		return r.requests.WithLabelValues(strconv.Itoa(code))
	}
	if c := r.byCode[code].Load(); c != nil {
		return *c
	}
	c := r.requests.WithLabelValues(strconv.Itoa(code))
	r.byCode[code].Store(&c)
	return c
}

// Counts are the requests answered and those answered with a 5xx status,
// since the recorder was made.
func (r *Recorder) Counts() (requests, errors uint64) { return r.total.Load(), r.errors.Load() }

// P99 is the 99th percentile of the last 2048 answer times; 0 before the
// first request. Answers being recorded while it reads may be counted
// with the time of the answer 2048 before them.
func (r *Recorder) P99() time.Duration {
	n := min(r.next.Load(), recent)
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = time.Duration(r.ring[i].Load())
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)*99+99)/100-1]
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer's Flush and
// deadlines.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
