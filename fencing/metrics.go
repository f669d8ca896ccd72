package fencing

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the fencing metrics for /metrics. Feed them from the retry
// wrapper: RetryConfig.OnAttempt = m.Observe.
type Metrics struct {
	attempts *prometheus.CounterVec
	duration prometheus.Histogram
	failing  *prometheus.GaugeVec
}

// NewMetrics registers the fencing metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "fence", Name: "attempts_total",
			Help: "Fence attempts by victim node and result (success, failure).",
		}, []string{"node", "result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shoal", Subsystem: "fence", Name: "attempt_duration_seconds",
			Help:    "Time taken by one fence attempt.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "shoal", Subsystem: "fence", Name: "consecutive_failures",
			Help: "Failed fence attempts in a row per victim node; 0 once fenced.",
		}, []string{"node"}),
	}
	for _, c := range []prometheus.Collector{m.attempts, m.duration, m.failing} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Observe records one attempt.
func (m *Metrics) Observe(a Attempt) {
	m.duration.Observe(a.Took.Seconds())
	if a.Err == nil {
		m.attempts.WithLabelValues(a.Victim.Name, "success").Inc()
		m.failing.WithLabelValues(a.Victim.Name).Set(0)
		return
	}
	m.attempts.WithLabelValues(a.Victim.Name, "failure").Inc()
	m.failing.WithLabelValues(a.Victim.Name).Set(float64(a.Number))
}

// Attempts is the attempts counter, by node and result.
func (m *Metrics) Attempts() *prometheus.CounterVec { return m.attempts }
