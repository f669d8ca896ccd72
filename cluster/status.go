package cluster

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/keys"
)

// Status is the cluster as one node sees it (shoald status, /api/status).
type Status struct {
	Node        string         `json:"node"`
	Cluster     string         `json:"cluster"`
	Incarnation string         `json:"incarnation,omitempty"`
	Ready       bool           `json:"ready"`
	TrustLeft   float64        `json:"trust_left_seconds"`
	LeaseLosses int            `json:"lease_losses"`
	Coordinator string         `json:"coordinator"`
	IsCoord     bool           `json:"is_coordinator"`
	EtcdMode    string         `json:"etcd_mode"`
	EtcdLeader  string         `json:"etcd_leader"`
	EtcdMembers []EtcdMember   `json:"etcd_members"`
	Members     []MemberStatus `json:"members"`
	Events      []TimedEvent   `json:"recent_events"`
	Errors      []string       `json:"errors,omitempty"`
}

// MemberStatus is one live member.
type MemberStatus struct {
	keys.MemberRecord
	TTLLeft float64 `json:"lease_ttl_left_seconds"`
}

// EtcdMember is one etcd cluster member.
type EtcdMember struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	ClientURLs []string `json:"client_urls"`
	PeerURLs   []string `json:"peer_urls"`
	Leader     bool     `json:"leader"`
	Learner    bool     `json:"learner,omitempty"`
}

// Status gathers the node's view of the cluster.
func (n *Node) Status(ctx context.Context) Status {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout())
	defer cancel()
	st := Status{Node: n.cfg.NodeName, Cluster: n.cfg.Cluster(), LeaseLosses: n.LeaseLosses(), EtcdMode: n.cfg.EtcdMode(), IsCoord: n.IsCoordinator()}
	if s := n.Session(); s != nil {
		st.Incarnation = s.Incarnation()
		st.Ready = s.Valid()
		st.TrustLeft = s.TrustLeft().Seconds()
	}
	if name, err := CoordinatorName(ctx, n.cli, n.cfg.Prefix()); err != nil {
		st.Errors = append(st.Errors, "coordinator: "+err.Error())
	} else {
		st.Coordinator = name
	}
	if ml, err := n.cli.MemberList(ctx); err != nil {
		st.Errors = append(st.Errors, "etcd members: "+err.Error())
	} else {
		// Ask every member at once, briefly: a dead member must not hold
		// up the answer.
		leaders := make(chan uint64, len(ml.Members))
		for _, m := range ml.Members {
			go func(urls []string) {
				var id uint64
				for _, ep := range urls {
					sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
					sr, err := n.cli.Status(sctx, ep)
					scancel()
					if err == nil {
						id = sr.Leader
						break
					}
				}
				leaders <- id
			}(m.ClientURLs)
		}
		var leader uint64
		for range ml.Members {
			if id := <-leaders; id != 0 && leader == 0 {
				leader = id
			}
		}
		for _, m := range ml.Members {
			em := EtcdMember{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), ClientURLs: m.ClientURLs, PeerURLs: m.PeerURLs, Leader: m.ID == leader, Learner: m.IsLearner}
			if em.Leader {
				st.EtcdLeader = m.Name
			}
			st.EtcdMembers = append(st.EtcdMembers, em)
		}
		sort.Slice(st.EtcdMembers, func(i, j int) bool { return st.EtcdMembers[i].Name < st.EtcdMembers[j].Name })
	}
	members := n.watcher.Members()
	st.Members = make([]MemberStatus, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		st.Members[i] = MemberStatus{MemberRecord: m, TTLLeft: -1}
		wg.Add(1)
		go func(i int, lease int64) {
			defer wg.Done()
			tctx, tcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer tcancel()
			if r, err := n.cli.TimeToLive(tctx, clientv3.LeaseID(lease)); err == nil {
				st.Members[i].TTLLeft = float64(r.TTL)
			}
		}(i, m.Lease)
	}
	wg.Wait()
	st.Events = n.events.snapshot()
	return st
}

// MembersView is the member view alone, answered from memory with no etcd
// request (/api/members): what the node believes right now.
type MembersView struct {
	Node        string              `json:"node"`
	Incarnation string              `json:"incarnation,omitempty"`
	Ready       bool                `json:"ready"`
	LeaseLosses int                 `json:"lease_losses"`
	Coordinator bool                `json:"is_coordinator"`
	Members     []keys.MemberRecord `json:"members"`
	Events      []TimedEvent        `json:"recent_events"`
}

// Members returns the member view without asking etcd.
func (n *Node) Members() MembersView {
	v := MembersView{Node: n.cfg.NodeName, LeaseLosses: n.LeaseLosses(), Coordinator: n.IsCoordinator(), Members: n.watcher.Members(), Events: n.events.snapshot()}
	if s := n.Session(); s != nil {
		v.Incarnation, v.Ready = s.Incarnation(), s.Valid()
	}
	return v
}

// Age is a helper for printing how long ago t was.
func Age(t time.Time) time.Duration { return time.Since(t).Round(time.Second) }
