package cluster

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg         *prometheus.Registry
	leaseLosses prometheus.Counter
	memberEv    *prometheus.CounterVec
	etcdHealthy prometheus.Gauge
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.leaseLosses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_lease_losses_total", Help: "Incarnations this process lost because its lease could not be renewed in time.",
	})
	m.memberEv = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_member_events_total", Help: "Member events seen by this node, by kind (up, down, left).",
	}, []string{"kind"})
	m.etcdHealthy = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shoal_etcd_healthy", Help: "1 when a linearizable etcd read succeeded at the last probe.",
	})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.leaseLosses, m.memberEv, m.etcdHealthy,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_lease_valid", Help: "1 while this node is a registered member with a lease it may trust.",
		}, func() float64 { return b2f(n.Ready()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_lease_trust_seconds", Help: "Seconds until the self-fence deadline, as of the last confirmed renewal.",
		}, func() float64 {
			if s := n.Session(); s != nil {
				return s.TrustLeft().Seconds()
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_members", Help: "Live members in this node's view.",
		}, func() float64 { return float64(len(n.watcher.Members())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_coordinator", Help: "1 while this node is the recovery coordinator.",
		}, func() float64 { return b2f(n.IsCoordinator()) }),
	)
	n.watcher.Subscribe(func(ev Event) { m.memberEv.WithLabelValues(string(ev.Kind)).Inc() })
	return m
}

// probeEtcd refreshes the etcd health gauge every interval until ctx ends.
func (n *Node) probeEtcd(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout())
		_, err := n.cli.Get(rctx, n.cfg.Prefix()+"/health")
		cancel()
		n.metrics.etcdHealthy.Set(b2f(err == nil))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
