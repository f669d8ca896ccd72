package dlm

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The DLM's keys in etcd, under the cluster prefix P:
//
//	P/members/NODE                    member key of a node incarnation (lease-bound, written by membership)
//	P/dlm/req/NODE/INC/SEQ            one lock request; create revision = FIFO position
//	P/dlm/lvb/RESOURCE                lock value block, written by PW/EX holders
//	P/dlm/recovered/NODE/INC          record of a dead incarnation's locks released by recovery
//	P/dlm/forced/NODE/INC/SEQ         record of a force-released request
//	P/dlm/checkpoint                  a replica's exact state at a revision (see checkpoint.go)
type keyspace struct{ prefix string }

func (k keyspace) root() string                   { return k.prefix + "/" }
func (k keyspace) members() string                { return k.prefix + "/members/" }
func (k keyspace) reqs() string                   { return k.prefix + "/dlm/req/" }
func (k keyspace) ownerReqs(o Owner) string       { return k.reqs() + o.Node + "/" + o.Incarnation + "/" }
func (k keyspace) req(o Owner, seq uint64) string { return fmt.Sprintf("%s%016x", k.ownerReqs(o), seq) }
func (k keyspace) lvbs() string                   { return k.prefix + "/dlm/lvb/" }
func (k keyspace) checkpoint() string             { return k.prefix + "/dlm/checkpoint" }
func (k keyspace) lvb(r Resource) string          { return k.lvbs() + r.String() }
func (k keyspace) recovered(o Owner) string {
	return k.prefix + "/dlm/recovered/" + o.Node + "/" + o.Incarnation
}
func (k keyspace) forced(id string) string {
	return k.prefix + "/dlm/forced/" + strings.TrimPrefix(id, k.reqs())
}

// ownerOfReq reads the owner from a request key.
func (k keyspace) ownerOfReq(key string) (Owner, bool) {
	rest, ok := strings.CutPrefix(key, k.reqs())
	if !ok {
		return Owner{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return Owner{}, false
	}
	return Owner{Node: parts[0], Incarnation: parts[1]}, true
}

// MemberRecord is the JSON value of a member key. The membership layer
// writes it; the DLM reads the incarnation from it to know whose locks
// die with the key.
type MemberRecord struct {
	Name        string   `json:"name"`
	Incarnation string   `json:"incarnation"`
	Lease       int64    `json:"lease"`
	Addresses   []string `json:"addresses,omitempty"`
	// Kind is "node" for a daemon, "client" for a tool holding locks.
	Kind string `json:"kind,omitempty"`
	// Leaving marks a clean departure, written just before the lease is
	// revoked, so the cluster does not take it for a death.
	Leaving bool `json:"leaving,omitempty"`
}

// requestValue is the JSON value of a request key.
type requestValue struct {
	Resource Resource `json:"res"`
	Mode     Mode     `json:"mode"`
	Recovery bool     `json:"recovery,omitempty"`
	NoQueue  bool     `json:"noqueue,omitempty"`
	// FailOnDeadlock offers the request as a deadlock victim.
	FailOnDeadlock bool `json:"fail_on_deadlock,omitempty"`
}

// lvbValue is the JSON value of a value-block key.
type lvbValue struct {
	Value []byte `json:"value"`
	Valid bool   `json:"valid"`
}

// recoveredValue records a recovery release.
type recoveredValue struct {
	By       string   `json:"by"`
	Released []string `json:"released"`
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are marshalled here
	}
	return string(b)
}
