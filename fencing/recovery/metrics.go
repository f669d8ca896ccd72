package recovery

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the recovery metrics for /metrics. Feed them from the
// engine: Config.OnProgress = m.Observe.
type Metrics struct {
	step      *prometheus.GaugeVec
	failures  *prometheus.CounterVec
	completed prometheus.Counter
	duration  prometheus.Histogram
	steps     *prometheus.HistogramVec
	failover  prometheus.Histogram

	mu       sync.Mutex
	attempts map[string]int
	finished map[string]Step
}

// NewMetrics registers the recovery metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "shoal", Subsystem: "recovery", Name: "current_step",
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
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "shoal", Subsystem: "recovery", Name: "step_duration_seconds",
			Help:    "Time each recovery step took, from the end of the step before it (retries included), by step.",
			Buckets: []float64{.001, .005, .025, .1, .25, .5, 1, 2.5, 5, 10, 30, 120},
		}, []string{"step"}),
		failover: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shoal", Subsystem: "failover", Name: "duration_seconds",
			Help:    "Time from the moment this node knew a member dead (its own suspicion, else the recovery request) to the recovery recorded done, when the member's locks and regions serve again.",
			Buckets: []float64{.25, .5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 300},
		}),
		attempts: map[string]int{},
		finished: map[string]Step{},
	}
	for _, c := range []prometheus.Collector{m.step, m.failures, m.completed, m.duration, m.steps, m.failover} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every step's failure count exists from the start, at 0, so that
	// rate() and alerts see the first failure as a change.
	for _, st := range Steps() {
		m.failures.WithLabelValues(st.String())
	}
	return m, nil
}

// Observe records a saved change of rec.
func (m *Metrics) Observe(rec Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := rec.Victim.String()
	if m.finished[k] == StepDone {
		return // told already: a repeated save counts once
	}
	for _, h := range rec.History {
		if h.Step > m.finished[k] {
			m.steps.WithLabelValues(h.Step.String()).Observe(h.Took.Seconds())
			m.finished[k] = h.Step
		}
	}
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

// ObserveFailover records one failover's time from death to service: feed
// it from Story (NewStory(log, m.ObserveFailover)).
func (m *Metrics) ObserveFailover(rec Record, deathToService time.Duration) {
	m.failover.Observe(deathToService.Seconds())
}
