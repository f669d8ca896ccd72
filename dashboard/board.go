package dashboard

import (
	"fmt"
	"sort"
	"time"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// availabilityBuckets is how many points the availability series keeps
// over its window: one hour in 10 s buckets by default.
const availabilityBuckets = 360

// finishedRecoveriesShown bounds the finished recoveries a snapshot
// carries; unfinished ones are always shown.
const finishedRecoveriesShown = 5

// Board is the dashboard's deterministic core: it turns successive
// Readings into Snapshots. It keeps what a single reading cannot say: the
// nodes seen before (a dead node has no member key left), when each node
// entered its state, the availability series and the previous traffic
// counters. It is not safe for concurrent use; Server serialises calls.
type Board struct {
	window time.Duration
	bucket time.Duration
	nodes  map[string]*seenNode
	avail  []AvailabilityPoint
	prev   map[string]trafficSample
}

type seenNode struct {
	row NodeRow
}

type trafficSample struct {
	at               time.Time
	requests, errors uint64
}

// NewBoard returns a board whose availability series covers window
// (one hour on the page), sampled in window/360 buckets.
func NewBoard(window time.Duration) *Board {
	if window <= 0 {
		window = time.Hour
	}
	return &Board{
		window: window,
		bucket: window / availabilityBuckets,
		nodes:  map[string]*seenNode{},
		prev:   map[string]trafficSample{},
	}
}

// Observe folds r into the board and returns the snapshot to show.
func (b *Board) Observe(r Reading) Snapshot {
	now := r.Time.UTC()
	st := r.Status
	s := Snapshot{
		Time: now, Node: st.Node, Cluster: st.Cluster, Ready: st.Ready,
		Recoveries: []RecoveryRow{}, Traffic: []TrafficRow{}, Services: []ServiceRow{},
		WindowMS: b.window.Milliseconds(),
	}
	s.Problems = append(s.Problems, st.Errors...)

	live := b.observeNodes(st, r.Recoveries, now)
	s.Nodes = b.nodeRows()
	s.Etcd = etcdRow(st, live)

	if r.LocksErr != nil {
		s.Problems = append(s.Problems, "locks: "+r.LocksErr.Error())
	} else if r.Locks != nil {
		s.Locks = lockFigures(*r.Locks)
	}
	if r.RecoveriesErr != nil {
		s.Problems = append(s.Problems, "recoveries: "+r.RecoveriesErr.Error())
	}
	s.Recoveries = recoveryRows(r.Recoveries, now)
	if r.VolumeErr != nil {
		s.Problems = append(s.Problems, "volume: "+r.VolumeErr.Error())
	} else if r.Volume != nil {
		s.Volume = volumeRow(*r.Volume)
	}
	if r.TrafficErr != nil {
		s.Problems = append(s.Problems, "traffic: "+r.TrafficErr.Error())
	}
	s.Traffic = b.trafficRows(r.Traffic, now)
	if r.ServicesErr != nil {
		s.Problems = append(s.Problems, "service addresses: "+r.ServicesErr.Error())
	}
	if r.Services != nil {
		s.Services = r.Services
	}
	b.addAvailability(AvailabilityPoint{Time: now, Up: len(live), Known: len(b.nodes), Ready: st.Ready})
	s.Availability = append([]AvailabilityPoint(nil), b.avail...)
	return s
}

// observeNodes updates the remembered nodes and returns the live ones.
func (b *Board) observeNodes(st cluster.Status, recs []recovery.Record, now time.Time) map[string]bool {
	live := map[string]bool{}
	set := func(name, state, inc string) *seenNode {
		n, ok := b.nodes[name]
		if !ok {
			n = &seenNode{row: NodeRow{Name: name, Since: now, LeaseLeftMS: -1}}
			b.nodes[name] = n
		}
		if n.row.State != state || n.row.Incarnation != inc {
			n.row.Since = now
		}
		n.row.State, n.row.Incarnation = state, inc
		return n
	}
	for _, m := range st.Members {
		live[m.Name] = true
		state := StateUp
		if m.Leaving {
			state = StateLeaving
		}
		n := set(m.Name, state, m.Incarnation)
		n.row.LeaseLeftMS = -1
		if m.TTLLeft >= 0 {
			n.row.LeaseLeftMS = int64(m.TTLLeft * 1000)
		}
		if m.Name == st.Node {
			n.row.LeaseLeftMS = int64(st.TrustLeft * 1000)
		}
		n.row.Slot, n.row.AdminURL, n.row.Step = m.Slot, m.AdminURL, ""
	}
	// The latest recovery of each incarnation decides a dead node's state.
	latest := map[string]recovery.Record{}
	for _, rec := range recs {
		k := rec.Victim.String()
		if old, ok := latest[k]; !ok || rec.Updated.After(old.Updated) {
			latest[k] = rec
		}
	}
	left := map[string]bool{}
	for _, ev := range st.Events {
		if ev.Kind == cluster.NodeLeft {
			left[ev.Member.Name+"/"+ev.Member.Incarnation] = true
		}
	}
	// A node the board never saw alive but that the cluster is still
	// recovering belongs on the board too.
	for _, rec := range recs {
		if _, ok := b.nodes[rec.Victim.Name]; !ok && !rec.Done() && !live[rec.Victim.Name] {
			set(rec.Victim.Name, StateDown, rec.Victim.Incarnation)
		}
	}
	for name, n := range b.nodes {
		if live[name] {
			continue
		}
		n.row.LeaseLeftMS, n.row.Step = 0, ""
		key := name + "/" + n.row.Incarnation
		rec, hasRec := latest[key]
		switch {
		case n.row.State == StateLeaving || n.row.State == StateLeft || left[key]:
			set(name, StateLeft, n.row.Incarnation)
		case hasRec && rec.Done():
			set(name, StateRecovered, n.row.Incarnation)
		case hasRec:
			set(name, StateRecovering, n.row.Incarnation)
			n.row.Step = rec.Next().String()
		default:
			set(name, StateDown, n.row.Incarnation)
		}
	}
	for name, n := range b.nodes {
		// A dead coordinator's election key outlives it by up to a lease:
		// only a live node is shown in the role.
		n.row.Coordinator = st.Coordinator != "" && name == st.Coordinator && live[name]
		n.row.EtcdLeader = st.EtcdLeader != "" && name == st.EtcdLeader
		n.row.Self = name == st.Node
	}
	return live
}

func (b *Board) nodeRows() []NodeRow {
	rows := make([]NodeRow, 0, len(b.nodes))
	for _, n := range b.nodes {
		rows = append(rows, n.row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows
}

func etcdRow(st cluster.Status, live map[string]bool) EtcdRow {
	e := EtcdRow{Mode: st.EtcdMode, Leader: st.EtcdLeader, Members: []EtcdMemberRow{}}
	e.Healthy = st.EtcdLeader != "" && len(st.EtcdMembers) > 0
	for _, m := range st.EtcdMembers {
		e.Members = append(e.Members, EtcdMemberRow{Name: m.Name, Leader: m.Leader, Learner: m.Learner, Live: live[m.Name]})
	}
	return e
}

func lockFigures(t LockTable) *LockFigures {
	f := &LockFigures{Held: map[string]int{}, Check: "ok"}
	if t.Check != nil {
		f.Check = t.Check.Error()
	}
	dead := map[dlm.Owner]bool{}
	for _, o := range t.Dead {
		dead[o] = true
		f.DeadOwners = append(f.DeadOwners, o.String())
	}
	resources := map[string]bool{}
	for _, l := range t.Locks {
		resources[resourceKey(l.Resource)] = true
		if l.Held {
			f.Held[l.Granted.String()]++
		}
		if !l.Held || l.Want != l.Granted {
			f.Waiters++
		}
		if dead[l.Owner] {
			f.Orphans++
		}
	}
	f.Resources = len(resources)
	for _, c := range dlm.OwnerCycles(t.Waits) {
		names := make([]string, len(c))
		for i, o := range c {
			names[i] = o.String()
		}
		f.Cycles = append(f.Cycles, names)
	}
	return f
}

func resourceKey(r dlm.Resource) string {
	if r.Volume == "" {
		return "name:" + r.Name
	}
	return fmt.Sprintf("region:%s:%d-%d", r.Volume, r.Start, r.End)
}

func recoveryRows(recs []recovery.Record, now time.Time) []RecoveryRow {
	sorted := append([]recovery.Record(nil), recs...)
	// A recovery under way is what the operator looks for: first,
	// however long ago it began; then the others, newest first.
	sort.SliceStable(sorted, func(i, j int) bool {
		if a, b := sorted[i].Done(), sorted[j].Done(); a != b {
			return !a
		}
		return sorted[i].Requested.After(sorted[j].Requested)
	})
	rows := []RecoveryRow{}
	finished := 0
	for _, rec := range sorted {
		if rec.Done() {
			if finished >= finishedRecoveriesShown {
				continue
			}
			finished++
		}
		rows = append(rows, recoveryRow(rec, now))
	}
	return rows
}

func recoveryRow(rec recovery.Record, now time.Time) RecoveryRow {
	row := RecoveryRow{
		ID: rec.Victim.String(), Victim: rec.Victim.Name, Incarnation: rec.Victim.Incarnation,
		Coordinator: rec.Coordinator, Requested: rec.Requested.UTC(), Done: rec.Done(), LastError: rec.LastError,
	}
	end := now
	if rec.Done() {
		end = rec.Updated
	}
	row.TookMS = nonNegativeMS(end.Sub(rec.Requested))
	took := map[recovery.Step]recovery.StepRecord{}
	for _, h := range rec.History {
		took[h.Step] = h
	}
	for _, step := range recovery.Steps() {
		sr := StepRow{Name: step.String(), State: StepPending}
		switch {
		case step <= rec.Finished:
			sr.State = StepFinished
			if h, ok := took[step]; ok {
				sr.TookMS, sr.Attempts, sr.Outcome = nonNegativeMS(h.Took), h.Attempts, outcomeText(h.Outcome)
			}
		case step == rec.Next():
			sr.State = StepRunning
			if rec.Attempts > 0 {
				sr.State = StepFailing
			}
			sr.TookMS, sr.Attempts = nonNegativeMS(now.Sub(rec.StepSince)), rec.Attempts
		}
		row.Steps = append(row.Steps, sr)
	}
	return row
}

// outcomeText reads an outcome as a person would: "2 locks",
// "reservation key preempted on 2 of 2 legs", "1 regions (bitmap slot 2
// merged)".
func outcomeText(o recovery.Outcome) string {
	switch {
	case o.Unit != "" && o.Method != "":
		return fmt.Sprintf("%d %s (%s)", o.Count, o.Unit, o.Method)
	case o.Unit != "":
		return fmt.Sprintf("%d %s", o.Count, o.Unit)
	}
	return o.Method
}

func nonNegativeMS(d time.Duration) int64 {
	if d < 0 {
		return 0
	}
	return d.Milliseconds()
}

func volumeRow(st mirror.Status) *VolumeRow {
	v := &VolumeRow{Name: st.Volume, SizeBytes: st.Size, Generation: st.Generation, Legs: []LegRow{}}
	if st.RegionSize > 0 {
		v.Regions = (st.Size + st.RegionSize - 1) / st.RegionSize
	}
	for _, l := range st.Legs {
		lr := LegRow{Index: l.Index, Addr: l.Addr, State: l.State.String(), Online: l.Online}
		switch l.State {
		case mirror.LegInSync:
			lr.Resync = 1
		case mirror.LegResyncing:
			if v.Regions > 0 {
				lr.Resync = min(1, max(0, float64(l.Cursor)/float64(v.Regions)))
			}
		}
		v.Legs = append(v.Legs, lr)
	}
	for _, n := range st.Dirty {
		v.DirtyRegions += n
	}
	if p := st.Progress; p != nil {
		v.Work = &WorkRow{Op: p.Op, Leg: p.Leg, Done: p.Done, Total: p.Total}
	}
	return v
}

func (b *Board) trafficRows(cs []TrafficCounters, now time.Time) []TrafficRow {
	rows := []TrafficRow{}
	for _, c := range cs {
		row := TrafficRow{Node: c.Node, P99MS: float64(c.P99.Microseconds()) / 1000}
		if p, ok := b.prev[c.Node]; ok {
			dt := now.Sub(p.at).Seconds()
			// A counter that went down belongs to a restarted web tier:
			// no rate for this interval.
			if dt > 0 && c.Requests >= p.requests && c.Errors >= p.errors {
				row.RequestsPerSecond = float64(c.Requests-p.requests) / dt
				row.ErrorsPerSecond = float64(c.Errors-p.errors) / dt
			}
		}
		b.prev[c.Node] = trafficSample{at: now, requests: c.Requests, errors: c.Errors}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })
	return rows
}

// addAvailability merges p into the series: one point per bucket keeps
// the fewest live members seen in it, so a short outage stays visible.
func (b *Board) addAvailability(p AvailabilityPoint) {
	start := p.Time.Truncate(b.bucket)
	if n := len(b.avail); n > 0 && b.avail[n-1].Time.Equal(start) {
		last := &b.avail[n-1]
		last.Up = min(last.Up, p.Up)
		last.Known = max(last.Known, p.Known)
		last.Ready = last.Ready && p.Ready
	} else {
		p.Time = start
		b.avail = append(b.avail, p)
	}
	cut := 0
	for cut < len(b.avail) && p.Time.Sub(b.avail[cut].Time) > b.window {
		cut++
	}
	b.avail = b.avail[cut:]
}
