package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/keys"
)

// recoveryRole is the node's recovery coordinator role. Every incarnation
// campaigns for it; the elected one runs the recovery order (fence, record
// the fence and revoke the lease, resync the dead node's bitmap and release
// its region locks, replay the journal, release its other locks) for every
// dead incarnation recorded in etcd, resuming where a previous coordinator
// stopped. Every node asks for a recovery when its member view sees an
// incarnation die.
type recoveryRole struct {
	n     *cluster.Node
	vols  *volumeService
	locks *lockService
	log   hclog.Logger
	// metrics, when set, count recoveries and fence attempts.
	metrics      *recovery.Metrics
	fenceMetrics *fencing.Metrics
	// replayers, when set, gives the parts that replay a journal in the
	// replay step.
	replayers func(context.Context) ([]Replayer, Incarnation, error)
	// replayWaiters, when set, gives the parts that say what their
	// replay waits for (the replay step's reports).
	replayWaiters func() []ReplayWaiter

	mu    sync.Mutex
	coord *recovery.Coordinator
}

func newRecoveryRole(n *cluster.Node, vols *volumeService, locks *lockService) *recoveryRole {
	return &recoveryRole{n: n, vols: vols, locks: locks, log: n.Logger().Named("recovery")}
}

// Leading reports whether this node coordinates recovery now.
func (r *recoveryRole) Leading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.coord != nil && r.coord.Leading()
}

// Run campaigns for sess and coordinates while elected. The election key
// hangs on sess's own lease and leadership ends when sess is lost: no
// second keep-alive of the lease that could end on its own.
func (r *recoveryRole) Run(ctx context.Context, sess *cluster.Session) error {
	self := fencing.NewNodeRef(sess.Name(), sess.Incarnation(), int64(sess.LeaseID()))
	engine := recovery.DefaultConfig()
	engine.Name = self.String()
	engine.Fencer = &volumeFencer{r: r}
	engine.Hooks = recovery.OutcomeHookFuncs{Replay: r.replay, Resync: r.resync, Release: r.release}
	engine.Logger = r.log
	engine.Waits = r.waits
	if r.metrics != nil {
		engine.OnProgress = r.metrics.Observe
	}
	if r.fenceMetrics != nil {
		engine.OnFenceAttempt = r.fenceMetrics.Observe
	}
	c, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: r.n.Client(), Lease: sess, Prefix: r.n.Config().Prefix(), Self: self, Engine: engine,
		// A coordinator that the failure detector finds silent is fenced
		// by the next candidate, which then takes over at once.
		FenceSuspect: engine.Fencer,
		// Writes caught by an etcd leader election are sent again as
		// soon as this node's member knows the new leader.
		LeaderChanges: r.n.LeaderChanges,
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.coord = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.coord = nil
		r.mu.Unlock()
	}()
	err = c.Run(ctx)
	if errors.Is(err, recovery.ErrSelfSuspected) {
		// The others think this incarnation dead and will fence it: stop
		// acting as it and come back as a new one.
		r.log.Error("this incarnation is being recovered by the cluster; abandoning it", "error", err)
		sess.Abandon(err)
	}
	return err
}

// waits says what victim's running recovery step waits for, for the
// engine's reports on a step that runs past its bound: the recovery region
// locks this node asked for and has not got, with the locks in their way
// and the requests queued before them. It does not block.
func (r *recoveryRole) waits(victim fencing.NodeRef, step recovery.Step) []recovery.Wait {
	switch step {
	case recovery.StepResync, recovery.StepReleaseLocks, recovery.StepReplayJournal:
	default:
		return nil
	}
	var out []recovery.Wait
	if step == recovery.StepReplayJournal && r.replayWaiters != nil {
		// What the journals' replays do and wait for (store locks, the
		// journal writer), then the lock manager's view below.
		for _, w := range r.replayWaiters() {
			out = append(out, w.ReplayWaits(victim)...)
		}
	}
	d := r.locks.running()
	if d == nil {
		return append(out, recovery.Wait{What: "lock manager", Detail: "not running on this incarnation"})
	}
	me := d.Owner()
	locks := d.Locks()
	byID := make(map[string]dlm.LockInfo, len(locks))
	for _, l := range locks {
		byID[l.ID] = l
	}
	edges := d.WaitFor()
	own := len(out)
	for _, l := range locks {
		if l.Owner != me || !l.Waiting() {
			continue
		}
		what := "recovery lock"
		switch {
		case l.Recovery && l.Resource.IsRegion():
			what = "recovery region lock"
		case !l.Recovery && step != recovery.StepReplayJournal:
			continue
		case !l.Recovery:
			// A plain request of this node: the replay's handlers may
			// need what the transaction behind it holds.
			what = "plain lock of this node"
		}
		w := recovery.Wait{What: what, Resource: l.Resource.String() + " " + l.Want.String()}
		for _, e := range edges {
			if e.Waiter != l.ID {
				continue
			}
			if e.Queued {
				w.QueuePosition++
				w.Detail = strings.TrimPrefix(w.Detail+", queued before it: "+describeLock(byID[e.Holder]), ", ")
				continue
			}
			w.Holders = append(w.Holders, describeLock(byID[e.Holder]))
		}
		out = append(out, w)
	}
	if len(out) == own {
		switch step {
		case recovery.StepReplayJournal:
			if own == 0 {
				out = append(out, recovery.Wait{What: "replay", Detail: "no lock pending and no part reports a wait: leg I/O of the replay"})
			}
		case recovery.StepResync:
			out = append(out, recovery.Wait{What: "resync", Detail: "no region lock pending: leg I/O or the leg table read"})
		case recovery.StepReleaseLocks:
			out = append(out, recovery.Wait{What: "lock table", Resource: victim.String(), Detail: "waiting for the lock table to see the victim dead, or for the release to be written"})
		}
	}
	return out
}

// describeLock is "owner mode", with "orphan" for a dead owner's lock and
// "converting to M" for a pending conversion.
func describeLock(l dlm.LockInfo) string {
	s := l.Owner.String() + " " + l.Granted.String()
	if !l.Held {
		s = l.Owner.String() + " waiting for " + l.Want.String()
	} else if l.Want != l.Granted {
		s += " converting to " + l.Want.String()
	}
	if l.Orphan {
		s += " orphan"
	}
	return s
}

// observe asks for the recovery of every incarnation that died. Every node
// asks; the request is written once.
func (r *recoveryRole) observe(ev cluster.Event) {
	if ev.Kind != cluster.NodeDown {
		return
	}
	r.request(fencing.NewNodeRef(ev.Member.Name, ev.Member.Incarnation, ev.Member.Lease))
}

// request writes a recovery request for victim (once; later requests for
// the same incarnation change nothing), trying for 10 s.
func (r *recoveryRole) request(victim fencing.NodeRef) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.requestWithin(ctx, cancel, victim)
}

// requestWithin is request trying until ctx ends; cancel is called once
// it is done.
func (r *recoveryRole) requestWithin(ctx context.Context, cancel context.CancelFunc, victim fencing.NodeRef) {
	go func() {
		defer cancel()
		store := recovery.NewEtcdStore(r.n.Client(), r.n.Config().Prefix(), r.n.LeaderChanges)
		by := r.n.Config().NodeName
		if s := r.n.Session(); s != nil {
			by += "/" + s.Incarnation()
		}
		created, err := store.RequestUntil(ctx, recovery.NewRecord(victim, by, time.Now().UTC()))
		switch {
		case err != nil:
			r.log.Warn("requesting recovery failed", "victim", victim.String(), "error", err)
		case created:
			r.log.Info("recovery requested", "victim", victim.String())
		}
	}()
}

// replay is the journal replay step: every part with a journal
// (Replayer) replays the victim's, in the order the parts were given.
// Without such a part there is nothing to redo; the step is recorded (0
// records) so the order stays whole.
func (r *recoveryRole) replay(ctx context.Context, victim fencing.NodeRef) (recovery.Outcome, error) {
	var rs []Replayer
	var inc Incarnation
	if r.replayers != nil {
		var err error
		if rs, inc, err = r.replayers(ctx); err != nil {
			return recovery.Outcome{}, fmt.Errorf("replay of %s: %w", victim, err)
		}
	}
	if len(rs) == 0 {
		return recovery.Outcome{Method: "no journal on this node", Unit: "records"}, nil
	}
	out := recovery.Outcome{Method: "journal replayed"}
	counted := true
	for _, x := range rs {
		if rc, ok := x.(RecordCounter); ok {
			n, err := rc.ReplayRecords(ctx, victim, inc)
			if err != nil {
				return recovery.Outcome{}, fmt.Errorf("replay of %s: %w", victim, err)
			}
			out.Count += n
			continue
		}
		counted = false
		if err := x.Replay(ctx, victim, inc); err != nil {
			return recovery.Outcome{}, fmt.Errorf("replay of %s: %w", victim, err)
		}
	}
	if counted {
		out.Unit = "records"
	}
	return out, nil
}

// resync merges the victim's write-intent bitmap and resyncs its regions.
func (r *recoveryRole) resync(ctx context.Context, victim fencing.NodeRef) (recovery.Outcome, error) {
	out := recovery.Outcome{Unit: "regions"}
	if !r.vols.enabled() {
		out.Method = "no volume"
		return out, nil
	}
	slot, ok, err := r.vols.victimSlot(ctx, victim)
	if err != nil {
		return out, err
	}
	if !ok {
		out.Method = "victim never opened the volume"
		return out, nil
	}
	if vi, err := r.vols.current(); err == nil && slot == *r.vols.cfg.Slot {
		// The victim is an earlier incarnation of this node (slots are
		// per node): this incarnation's volume open recovered the slot
		// before any write of its own, and the slot is live now.
		out.Method = fmt.Sprintf("bitmap slot %d recovered by this node's own volume open", slot)
		return out, r.releaseRegions(ctx, victim, vi, &out)
	}
	vi, done, err := r.volumeForRecovery(ctx)
	if err != nil {
		return out, err
	}
	defer done()
	rep, err := vi.vol.RecoverFenced(ctx, slot)
	if err != nil {
		return out, fmt.Errorf("resync of slot %d: %w", slot, err)
	}
	r.log.Debug("merged bitmap and resynced", "victim", victim.String(), "slot", slot, "report", fmt.Sprintf("%+v", rep))
	out.Method = fmt.Sprintf("bitmap slot %d merged", slot)
	out.Count = rep.Regions
	return out, r.releaseRegions(ctx, victim, vi, &out)
}

// releaseRegions releases the victim's locks on the volume's regions,
// checksum areas and leg table once its slot is resynced (see
// mirror.Volume.LockNamespaces): the survivors' writes to the regions it
// held go on from here, before the journal replay, which needs what those
// writers hold. Its other locks wait for the release step.
func (r *recoveryRole) releaseRegions(ctx context.Context, victim fencing.NodeRef, vi *volumeIncarnation, out *recovery.Outcome) error {
	n, err := r.locks.releaseDeadRegions(ctx, keys.MemberRecord{Name: victim.Name, Incarnation: victim.Incarnation}, vi.vol.LockNamespaces())
	if err != nil {
		return fmt.Errorf("releasing the region locks of %s after the resync: %w", victim, err)
	}
	out.Method += fmt.Sprintf(", %d region locks released", n)
	return nil
}

// volumeForRecovery is this node's open volume, or, while it is not open
// (its own open may be waiting for this very recovery), a handle opened
// without a slot for the step; done closes such a handle.
func (r *recoveryRole) volumeForRecovery(ctx context.Context) (vi *volumeIncarnation, done func(), err error) {
	vi, err = r.vols.current()
	if err == nil {
		return vi, func() {}, nil
	}
	if !errors.Is(err, ErrNoVolume) {
		return nil, nil, err
	}
	vi, err = r.vols.openForRecovery(ctx, r.locks.running())
	if err != nil {
		return nil, nil, fmt.Errorf("this node's volume is not open and a recovery handle did not open: %w", err)
	}
	return vi, func() { closeRecoveryVolume(vi) }, nil
}

// release hands the victim's locks on through the lock manager's recovery
// gating.
func (r *recoveryRole) release(ctx context.Context, victim fencing.NodeRef) (recovery.Outcome, error) {
	n, err := r.locks.releaseDead(ctx, keys.MemberRecord{Name: victim.Name, Incarnation: victim.Incarnation})
	return recovery.Outcome{Count: int64(n), Unit: "locks"}, err
}

// volumeFencer fences with what the volume offers at the moment of the
// fence: persistent reservations on the legs that have them (through this
// node's registered connections), the lease for the legs that have not,
// or the configured fence agent.
type volumeFencer struct{ r *recoveryRole }

// Fence implements fencing.Fencer.
func (f *volumeFencer) Fence(ctx context.Context, victim fencing.NodeRef) error {
	_, err := f.FenceOutcome(ctx, victim)
	return err
}

// FenceOutcome fences victim and says how (recovery.OutcomeFencer).
func (f *volumeFencer) FenceOutcome(ctx context.Context, victim fencing.NodeRef) (recovery.Outcome, error) {
	r := f.r
	cfg := r.n.Config()
	lease, err := fencing.NewLeaseFencer(fencing.LeaseConfig{
		Leases: fencing.EtcdLeases{Client: r.n.Client()}, Margin: cfg.SelfFenceMargin(), Logger: r.log.Named("lease-fence"),
	})
	if err != nil {
		return recovery.Outcome{}, err
	}
	byLease := recovery.Outcome{Method: "lease expired plus self-fence margin"}
	v := cfg.Volume
	switch {
	case v.FencingMethod() == cluster.FenceAgent:
		agentCfg := fencing.DefaultAgentConfig(v.FenceAgent)
		agentCfg.Timeout = v.AgentTimeout()
		agentCfg.Logger = r.log.Named("fence-agent")
		agent, err := fencing.NewAgentFencer(agentCfg)
		if err != nil {
			return recovery.Outcome{}, err
		}
		return recovery.Outcome{Method: "fence agent " + v.FenceAgent}, agent.Fence(ctx, victim)
	case !r.vols.enabled() || v.FencingMethod() == cluster.FenceLease:
		return byLease, lease.Fence(ctx, victim)
	}
	vi, done, err := r.volumeForRecovery(ctx)
	if err != nil {
		return recovery.Outcome{}, err
	}
	defer done()
	if vi.pr == nil {
		return byLease, lease.Fence(ctx, victim)
	}
	withPR := len(fencing.LegsOf(vi.names, vi.raw))
	out := recovery.Outcome{Method: fmt.Sprintf("reservation key preempted on %d of %d legs", withPR, len(vi.raw))}
	methods := []fencing.Method{{Name: "reservations", Fencer: vi.pr}}
	if withPR < len(vi.raw) {
		// Some legs have no reservations: the victim is only cut off from
		// those once its lease is gone.
		methods = append(methods, fencing.Method{Name: "lease", Fencer: lease})
		out.Method += ", lease expired for the others"
	}
	all, err := fencing.NewAll(r.log, methods...)
	if err != nil {
		return recovery.Outcome{}, err
	}
	return out, all.Fence(ctx, victim)
}

// recoveryView is one recovery record as /api/recoveries serves it: the
// record, the coordinator elected now, and whether an unfinished recovery
// has no coordinator to carry it on.
type recoveryView struct {
	recovery.Record
	// ElectedCoordinator names the coordinator elected now; "" when none.
	ElectedCoordinator string `json:"elected_coordinator"`
	// NoCoordinator is set on an unfinished recovery while no coordinator
	// is elected: nobody is working on it.
	NoCoordinator bool `json:"no_coordinator,omitempty"`
}

// handleRecoveries serves /api/recoveries: every recovery record, with the
// coordinator elected now.
func (r *recoveryRole) handleRecoveries(w http.ResponseWriter, req *http.Request) {
	recs, err := recovery.List(req.Context(), r.n.Client(), r.n.Config().Prefix())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	elected, err := cluster.CoordinatorName(req.Context(), r.n.Client(), r.n.Config().Prefix())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	out := make([]recoveryView, len(recs))
	for i, rec := range recs {
		out[i] = recoveryView{Record: rec, ElectedCoordinator: elected, NoCoordinator: elected == "" && !rec.Done()}
	}
	cluster.WriteJSON(w, http.StatusOK, out)
}

// registerClusterMetrics adds the cluster-wide recovery gauges, read from
// etcd at each scrape (bounded by 1s): whether a coordinator is elected,
// and how many recoveries are unfinished. Unfinished recoveries with no
// coordinator elected are a stalled failover.
func (r *recoveryRole) registerClusterMetrics(reg prometheus.Registerer) error {
	read := func(f func(ctx context.Context) (float64, error)) func() float64 {
		return func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			v, err := f(ctx)
			if err != nil {
				return -1
			}
			return v
		}
	}
	elected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoal_recovery_coordinator_elected",
		Help: "1 when the cluster has an elected recovery coordinator, 0 when none, -1 when etcd could not be read.",
	}, read(func(ctx context.Context) (float64, error) {
		name, err := cluster.CoordinatorName(ctx, r.n.Client(), r.n.Config().Prefix())
		if name != "" {
			return 1, err
		}
		return 0, err
	}))
	unfinished := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shoal_recoveries_unfinished",
		Help: "Recoveries requested and not finished, cluster-wide; -1 when etcd could not be read.",
	}, read(func(ctx context.Context) (float64, error) {
		recs, err := recovery.List(ctx, r.n.Client(), r.n.Config().Prefix())
		return float64(len(recovery.InProgress(recs))), err
	}))
	for _, c := range []prometheus.Collector{elected, unfinished} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
