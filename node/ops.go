package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dashboard"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/keys"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RecordCounter is the optional ability of a Replayer to say how many
// journal records it replayed: the recovery step reports the sum (the
// story in every node's log, the dashboard). A Replayer without it
// replays through Replay and the count is left out.
type RecordCounter interface {
	ReplayRecords(ctx context.Context, victim fencing.NodeRef, inc Incarnation) (records int64, err error)
}

// dashSource is the node as its dashboard sees it (dashboard.Source).
type dashSource struct {
	cn      *cluster.Node
	locks   *lockService
	vols    *volumeService
	traffic TrafficReporter // nil without a web tier
}

func (s dashSource) Status(ctx context.Context) cluster.Status { return s.cn.Status(ctx) }

func (s dashSource) Locks(ctx context.Context) (dashboard.LockTable, error) {
	// The lock manager runs or it does not: no waiting for the next
	// incarnation here.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	d, err := s.locks.current(wctx)
	if err != nil {
		return dashboard.LockTable{}, err
	}
	return dashboard.LockTable{Locks: d.Locks(), Waits: d.WaitFor(), Dead: d.DeadOwners(), Check: d.Check()}, nil
}

func (s dashSource) Recoveries(ctx context.Context) ([]recovery.Record, error) {
	return recovery.List(ctx, s.cn.Client(), s.cn.Config().Prefix())
}

func (s dashSource) Volume(ctx context.Context) (*mirror.Status, error) {
	if !s.vols.enabled() {
		return nil, nil
	}
	vi, err := s.vols.current()
	if err != nil {
		return nil, err
	}
	st, err := vi.vol.Status(ctx)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// newLockWaitMetric registers shoal_lock_wait_seconds{mode}: how long
// local callers waited for each lock grant, 0 for a cached one.
func newLockWaitMetric(reg prometheus.Registerer) (func(dlm.Mode, time.Duration), error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "shoal", Subsystem: "lock", Name: "wait_seconds",
		Help:    "Time a local caller waited for a lock grant, by mode; 0 for a grant served from the node's cache.",
		Buckets: []float64{0, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"mode"})
	if err := reg.Register(h); err != nil {
		return nil, err
	}
	return func(m dlm.Mode, waited time.Duration) { h.WithLabelValues(m.String()).Observe(waited.Seconds()) }, nil
}

// newDashboard builds the node's dashboard, served at /ui/ of the admin
// API.
func newDashboard(cn *cluster.Node, locks *lockService, vols *volumeService, traffic TrafficReporter) (*dashboard.Server, error) {
	cfg := dashboard.DefaultConfig()
	cfg.Source = dashSource{cn: cn, locks: locks, vols: vols, traffic: traffic}
	cfg.Logger = cn.Logger().Named("dashboard")
	return dashboard.New(cfg)
}

// followRecoveries tells every failover in this node's log (recovery.Story),
// whoever coordinates it: it reads the recovery records and then follows
// their changes until ctx ends. A lost watch is opened again from where
// it stopped.
// changed, when set, is called after every record seen.
func followRecoveries(ctx context.Context, cn *cluster.Node, story *recovery.Story, changed func()) {
	log := cn.Logger().Named("recovery")
	prefix := keys.Of(cn.Config().Prefix()).Recoveries()
	cli := cn.Client()
	var rev int64
	// The first read finds the failovers that ended before this node ran:
	// history, not news (recovery.Story.Recall). A read again after a
	// compaction tells what this node missed.
	first := true
	for ctx.Err() == nil {
		if rev == 0 {
			rctx, cancel := context.WithTimeout(ctx, cn.Config().RequestTimeout())
			resp, err := cli.Get(rctx, prefix, clientv3.WithPrefix())
			cancel()
			if err != nil {
				if !sleepCtx(ctx, time.Second) {
					return
				}
				continue
			}
			for _, kv := range resp.Kvs {
				tellRecord(log, story, kv.Value, first)
			}
			first = false
			if changed != nil {
				changed()
			}
			rev = resp.Header.Revision
		}
		wch := cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if errors.Is(err, context.Canceled) {
					return
				}
				// Compacted past our revision: read the records afresh.
				if wr.CompactRevision != 0 {
					rev = 0
				}
				break
			}
			for _, ev := range wr.Events {
				rev = ev.Kv.ModRevision
				switch ev.Type {
				case clientv3.EventTypePut:
					tellRecord(log, story, ev.Kv.Value, false)
				case clientv3.EventTypeDelete:
					if ev.PrevKv != nil {
						var rec recovery.Record
						if json.Unmarshal(ev.PrevKv.Value, &rec) == nil {
							story.Drop(rec.Victim)
						}
					}
				}
			}
			if changed != nil {
				changed()
			}
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// tellRecord feeds a recovery record to story; with recallDone a finished
// one is recalled, not told.
func tellRecord(log hclog.Logger, story *recovery.Story, value []byte, recallDone bool) {
	var rec recovery.Record
	if err := json.Unmarshal(value, &rec); err != nil {
		log.Warn("unreadable recovery record", "error", err)
		return
	}
	if recallDone && rec.Done() {
		story.Recall(rec)
		return
	}
	story.Observe(rec)
}

// suspectOnDeath starts a failover's story on this node the moment its
// member view sees an incarnation vanish.
func suspectOnDeath(story *recovery.Story) func(cluster.Event) {
	return func(ev cluster.Event) {
		if ev.Kind != cluster.NodeDown {
			return
		}
		m := ev.Member
		story.Suspected(fencing.NewNodeRef(m.Name, m.Incarnation, m.Lease), "its lease expired", time.Now())
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// TrafficReporter is the optional ability of a Part that serves HTTP (the
// web tier's request metrics) to say what it answered. The node registers
// its metrics on /metrics, and the dashboard shows every node's figures:
// this node's from the reporter, the others' from their /metrics.
type TrafficReporter interface {
	Part
	// Counts are the requests answered and those answered with a 5xx.
	Counts() (requests, errors uint64)
	// P99 is the recent 99th percentile of answer times.
	P99() time.Duration
	// Register puts the part's metrics on the node's registry.
	Register(reg prometheus.Registerer) error
}

// Traffic implements dashboard.TrafficSource: this node's web traffic and
// that of every live member whose /metrics shows a web tier (read over
// the admin API with this node's certificate, each within 500 ms).
func (s dashSource) Traffic(ctx context.Context) ([]dashboard.TrafficCounters, error) {
	var rows []dashboard.TrafficCounters
	self := s.cn.Config().NodeName
	if s.traffic != nil {
		req, errs := s.traffic.Counts()
		rows = append(rows, dashboard.TrafficCounters{Node: self, Requests: req, Errors: errs, P99: s.traffic.P99()})
	}
	var peers []keys.MemberRecord
	for _, m := range s.cn.Watcher().Members() {
		if m.Name != self && m.AdminURL != "" {
			peers = append(peers, m)
		}
	}
	if len(peers) == 0 {
		return rows, nil
	}
	tlsCfg, err := cluster.ClientTLS(s.cn.Certs())
	if err != nil {
		return rows, err
	}
	hc := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer hc.CloseIdleConnections()
	found := make([]*dashboard.TrafficCounters, len(peers))
	var wg sync.WaitGroup
	for i, m := range peers {
		wg.Go(func() { found[i] = peerTraffic(ctx, hc, m) })
	}
	wg.Wait()
	for _, f := range found {
		if f != nil {
			rows = append(rows, *f)
		}
	}
	return rows, nil
}

// peerTraffic reads a member's web figures from its /metrics; nil when it
// cannot be read or the member runs no web tier.
func peerTraffic(ctx context.Context, hc *http.Client, m keys.MemberRecord) *dashboard.TrafficCounters {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.AdminURL+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	reqs, ok := fams["shoal_http_requests_total"]
	if !ok {
		return nil
	}
	t := &dashboard.TrafficCounters{Node: m.Name}
	for _, mm := range reqs.GetMetric() {
		n := uint64(mm.GetCounter().GetValue())
		t.Requests += n
		for _, l := range mm.GetLabel() {
			if l.GetName() == "code" && strings.HasPrefix(l.GetValue(), "5") {
				t.Errors += n
			}
		}
	}
	if p, ok := fams["shoal_http_recent_p99_seconds"]; ok && len(p.GetMetric()) > 0 {
		t.P99 = time.Duration(p.GetMetric()[0].GetGauge().GetValue() * float64(time.Second))
	}
	return t
}
