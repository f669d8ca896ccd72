package recovery_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

func TestMetricsFollowRecord(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := recovery.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	now := epoch
	rec := recovery.NewRecord(fencing.NewNodeRef("n1", "i", 1), "a", now)
	for _, fail := range []bool{true, true, false} {
		now = now.Add(time.Second)
		if fail {
			rec, _ = rec.Fail(recovery.StepFence, "a", errTest, now)
		} else {
			rec, _ = rec.Finish(recovery.StepFence, "a", now)
		}
		m.Observe(rec)
		m.Observe(rec) // a repeated save counts once
	}
	for _, st := range recovery.Steps()[1:] {
		now = now.Add(time.Second)
		rec, _ = rec.Finish(st, "a", now)
		m.Observe(rec)
	}
	m.Observe(rec) // the done record saved twice
	m.ObserveFailover(rec, 3*time.Second)
	got := gather(t, reg)
	if got["shoal_recovery_step_duration_seconds_count"] != 6 || got["shoal_failover_duration_seconds_count"] != 1 {
		t.Fatalf("histograms %v", got)
	}
	if got["shoal_recovery_step_failures_total"] != 2 || got["shoal_recovery_completed_total"] != 1 || got["shoal_recovery_current_step"] != 0 {
		t.Fatalf("metrics %v", got)
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("injected")

// gather sums every metric family's values by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[mf.GetName()] += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[mf.GetName()+"_count"] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}
