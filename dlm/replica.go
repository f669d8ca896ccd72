package dlm

import (
	"encoding/json"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/shoal-ha/shoal/internal/keys"
)

// Replica is a node's copy of the lock table, fed with the etcd events
// of the cluster prefix in revision order. It turns etcd events into table
// events: request keys into requests, conversions and releases, member keys
// that vanish (or change incarnation) into deaths, value-block keys into
// LVB updates. Like Table it is deterministic and not safe for concurrent
// use.
type Replica struct {
	Table   *Table
	keys    keyspace
	members map[string]Owner // member key -> incarnation it holds
}

// NewReplica returns an empty replica for the cluster prefix.
func NewReplica(prefix string) *Replica {
	return &Replica{Table: NewTable(), keys: newKeyspace(prefix), members: map[string]Owner{}}
}

// Members returns the live incarnations known to the replica.
func (r *Replica) Members() []Owner {
	var out []Owner
	for _, o := range r.members {
		out = append(out, o)
	}
	return out
}

// Alive reports whether o is a live member.
func (r *Replica) Alive(o Owner) bool {
	return r.members[r.keys.members()+o.Node] == o
}

// Apply feeds one etcd event. Events outside the DLM's keys are ignored.
// Malformed values are reported as errors and otherwise ignored (the
// replica stays consistent with every other node's).
func (r *Replica) Apply(ev *mvccpb.Event) ([]Decision, error) {
	kv := ev.Kv
	key := string(kv.Key)
	rev := kv.ModRevision
	put := ev.Type == mvccpb.PUT
	switch {
	case strings.HasPrefix(key, r.keys.members()):
		old, had := r.members[key]
		if !put {
			delete(r.members, key)
			if had {
				return r.Table.MemberDown(rev, old)
			}
			return nil, r.Table.advance(rev)
		}
		var m keys.MemberRecord
		if err := json.Unmarshal(kv.Value, &m); err != nil || m.Incarnation == "" {
			return nil, fmt.Errorf("dlm: member key %s: bad value %q", key, kv.Value)
		}
		o := Owner{Node: strings.TrimPrefix(key, r.keys.members()), Incarnation: m.Incarnation}
		r.members[key] = o
		if had && old != o {
			return r.Table.MemberDown(rev, old)
		}
		return nil, r.Table.advance(rev)
	case strings.HasPrefix(key, r.keys.reqs()):
		if !put {
			return r.Table.Release(rev, key)
		}
		o, ok := r.keys.ownerOfReq(key)
		if !ok {
			return nil, fmt.Errorf("dlm: malformed request key %s", key)
		}
		var v requestValue
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("dlm: request %s: bad value: %v", key, err)
		}
		if !r.Alive(o) && !r.Table.Dead(o) {
			// Written after the member key vanished cannot happen (writes
			// are guarded); before it appeared means the writer skipped the
			// guard. Either way the owner is not a live member.
			ds, err := r.Table.MemberDown(rev, o)
			if err != nil {
				return ds, err
			}
			more, err := r.Table.Request(rev, Request{ID: key, Owner: o, Resource: v.Resource, Mode: v.Mode})
			return append(ds, more...), err
		}
		return r.Table.Request(rev, Request{ID: key, Owner: o, Resource: v.Resource, Mode: v.Mode, Recovery: v.Recovery, NoQueue: v.NoQueue, FailOnDeadlock: v.FailOnDeadlock})
	case strings.HasPrefix(key, r.keys.lvbs()):
		res, err := ParseResource(strings.TrimPrefix(key, r.keys.lvbs()))
		if err != nil {
			return nil, err
		}
		if !put {
			return nil, r.Table.SetLVB(rev, res, nil, true)
		}
		var v lvbValue
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("dlm: value block %s: %v", key, err)
		}
		return nil, r.Table.SetLVB(rev, res, v.Value, v.Valid)
	}
	return nil, nil
}
