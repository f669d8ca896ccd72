package dashboard

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/keys"
)

// story is a scripted cluster for the dashboard's tests: three nodes that
// the test kills, recovers step by step and brings back, the way the
// real cluster records it.
type story struct {
	mu      sync.Mutex
	clk     *clock.Fake
	now     time.Time
	members map[string]cluster.MemberStatus
	coord   string
	leader  string
	recs    map[string]recovery.Record
	locks   LockTable
	vol     *mirror.Status
	traffic []TrafficCounters
}

func newStory(now time.Time) *story {
	s := &story{clk: clock.NewFake(now), now: now, members: map[string]cluster.MemberStatus{}, recs: map[string]recovery.Record{}, coord: "node1", leader: "node1"}
	for i, n := range []string{"node1", "node2", "node3"} {
		slot := i
		s.members[n] = cluster.MemberStatus{MemberRecord: keys.MemberRecord{Name: n, Incarnation: n + "-a", Lease: int64(100 + i), Slot: &slot, Started: now}, TTLLeft: 2}
	}
	s.locks = LockTable{Locks: []dlm.LockInfo{
		{ID: "1", Owner: dlm.Owner{Node: "node1", Incarnation: "node1-a"}, Resource: dlm.Resource{Name: "sessions"}, Held: true, Granted: dlm.PR, Want: dlm.PR},
		{ID: "2", Owner: dlm.Owner{Node: "node2", Incarnation: "node2-a"}, Resource: dlm.Resource{Volume: "web", Start: 0, End: 1 << 20}, Held: true, Granted: dlm.EX, Want: dlm.EX},
		{ID: "3", Owner: dlm.Owner{Node: "node3", Incarnation: "node3-a"}, Resource: dlm.Resource{Volume: "web", Start: 0, End: 1 << 20}, Held: false, Granted: dlm.NL, Want: dlm.PW},
	}}
	s.vol = &mirror.Status{Volume: "web", Size: 256 << 20, RegionSize: 1 << 20, Slots: 8, Generation: 3,
		Legs:  []mirror.LegStatus{{Index: 0, Addr: "a.img", State: mirror.LegInSync, Online: true}, {Index: 1, Addr: "b.img", State: mirror.LegResyncing, Cursor: 64, Online: true}},
		Dirty: map[int]int64{1: 12}}
	return s
}

func (s *story) advance(d time.Duration) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = s.now.Add(d)
	s.clk.Advance(d)
	return s.now
}

func (s *story) kill(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.members, name)
	s.locks.Dead = []dlm.Owner{{Node: name, Incarnation: name + "-a"}}
}

// request records the recovery of name's first incarnation.
func (s *story) request(name string) fencing.NodeRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := fencing.NewNodeRef(name, name+"-a", 101)
	rec := recovery.NewRecord(v, "node1/node1-a", s.now).TakeOver("node1/node1-a", s.now)
	s.recs[v.String()] = rec
	return v
}

// finish records the next step of v's recovery as finished.
func (s *story) finish(v fencing.NodeRef) recovery.Step {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.recs[v.String()]
	step := rec.Next()
	next, err := rec.Finish(step, "node1/node1-a", s.now)
	if err != nil {
		panic(err)
	}
	s.recs[v.String()] = next
	if step == recovery.StepReleaseLocks {
		s.locks.Dead = nil
		s.locks.Locks = s.locks.Locks[:1]
	}
	return step
}

func (s *story) rejoin(name, inc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot := 1
	s.members[name] = cluster.MemberStatus{MemberRecord: keys.MemberRecord{Name: name, Incarnation: inc, Slot: &slot, Started: s.now}, TTLLeft: 2}
}

func (s *story) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *story) Status(ctx context.Context) cluster.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := cluster.Status{Node: "node1", Cluster: "web", Incarnation: "node1-a", Ready: true, TrustLeft: 1.7,
		Coordinator: s.coord, IsCoord: s.coord == "node1", EtcdMode: "embedded", EtcdLeader: s.leader}
	for _, n := range []string{"node1", "node2", "node3"} {
		st.EtcdMembers = append(st.EtcdMembers, cluster.EtcdMember{Name: n, Leader: n == s.leader})
		if m, ok := s.members[n]; ok {
			st.Members = append(st.Members, m)
		}
	}
	return st
}

func (s *story) Locks(ctx context.Context) (LockTable, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lt := s.locks
	lt.Locks = append([]dlm.LockInfo(nil), lt.Locks...)
	return lt, nil
}

func (s *story) Recoveries(ctx context.Context) ([]recovery.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []recovery.Record
	for _, r := range s.recs {
		out = append(out, r)
	}
	return out, nil
}

func (s *story) Volume(ctx context.Context) (*mirror.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := *s.vol
	return &v, nil
}

func (s *story) Traffic(ctx context.Context) ([]TrafficCounters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TrafficCounters(nil), s.traffic...), nil
}

// broken is a Source whose every part fails.
type broken struct{}

var errBroken = errors.New("etcd unreachable")

func (broken) Status(ctx context.Context) cluster.Status {
	return cluster.Status{Node: "node1", Cluster: "web", Errors: []string{"etcd members: " + errBroken.Error()}}
}
func (broken) Locks(ctx context.Context) (LockTable, error) { return LockTable{}, errBroken }
func (broken) Recoveries(ctx context.Context) ([]recovery.Record, error) {
	return nil, errBroken
}
func (broken) Volume(ctx context.Context) (*mirror.Status, error) { return nil, errBroken }
