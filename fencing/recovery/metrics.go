package recovery

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the recovery metrics for /metrics. Feed them from the
// engine: Config.OnProgress = m.Observe.
type Metrics struct {
	step      *prometheus.GaugeVec
	failures  *prometheus.CounterVec
	completed prometheus.Counter
	duration  prometheus.Histogram

	mu       sync.Mutex
	attempts map[string]int
}

// NewMetrics registers the recovery metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "shoal", Subsystem: "recovery", Name: "step",
			Help: "Step a node's recovery is at (1 fence ... 6 done); 0 when none is in progress.",
		}, []string{"node"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "recovery", Name: "step_failures_total",
			Help: "Failed attempts at recovery steps, by step.",
		}, []string{"step"}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "recovery", Name: "completed_total",
			Help: "Recoveries finished by this coordinator.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shoal", Subsystem: "recovery", Name: "duration_seconds",
			Help:    "Time from a recovery's request to its end.",
			Buckets: []float64{.1, .25, .5, 1, 2, 5, 10, 30, 60, 300},
		}),
		attempts: map[string]int{},
	}
	for _, c := range []prometheus.Collector{m.step, m.failures, m.completed, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Observe records a saved change of rec.
func (m *Metrics) Observe(rec Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := rec.Victim.String()
	if rec.Done() {
		m.step.WithLabelValues(rec.Victim.Name).Set(0)
		m.completed.Inc()
		m.duration.Observe(rec.Updated.Sub(rec.Requested).Seconds())
		delete(m.attempts, k)
		return
	}
	m.step.WithLabelValues(rec.Victim.Name).Set(float64(rec.Next()))
	if rec.Attempts > m.attempts[k] {
		m.failures.WithLabelValues(rec.Next().String()).Add(float64(rec.Attempts - m.attempts[k]))
	}
	m.attempts[k] = rec.Attempts
}
