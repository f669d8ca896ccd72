package dlm

import (
	"encoding/json"

	"github.com/shoal-ha/shoal/internal/keys"
)

// keyspace is the DLM's view of the cluster's keys (all of them defined,
// with their record types, in internal/keys): the member keys it reads,
// and under P/dlm/ the requests, value blocks, recovery and forced
// release records and the checkpoint.
type keyspace struct{ s keys.Space }

func newKeyspace(prefix string) keyspace { return keyspace{keys.Of(prefix)} }

func (k keyspace) root() string             { return k.s.All() }
func (k keyspace) members() string          { return k.s.Members() }
func (k keyspace) reqs() string             { return k.s.DLMRequests() }
func (k keyspace) ownerReqs(o Owner) string { return k.s.DLMOwnerRequests(o.Node, o.Incarnation) }
func (k keyspace) req(o Owner, seq uint64) string {
	return k.s.DLMRequest(o.Node, o.Incarnation, seq)
}
func (k keyspace) lvbs() string              { return k.s.DLMValueBlocks() }
func (k keyspace) checkpoint() string        { return k.s.DLMCheckpoint() }
func (k keyspace) checkpointRequest() string { return k.s.DLMCheckpointRequest() }
func (k keyspace) lvb(r Resource) string     { return k.s.DLMValueBlock(r.String()) }
func (k keyspace) recovered(o Owner) string  { return k.s.DLMRecoveredOwner(o.Node, o.Incarnation) }
func (k keyspace) forced(id string) string   { return k.s.DLMForcedRequest(id) }

// ownerOfReq reads the owner from a request key.
func (k keyspace) ownerOfReq(key string) (Owner, bool) {
	name, inc, ok := k.s.DLMRequestOwner(key)
	return Owner{Node: name, Incarnation: inc}, ok
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
