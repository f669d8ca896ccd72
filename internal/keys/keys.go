package keys

import (
	"fmt"
	"strings"
	"time"
)

// Space is a cluster's keyspace: the root P under which every key of the
// cluster lives, without a trailing slash (for example "/shoal/shoal").
type Space string

// Cluster is the keyspace of the cluster named name (cluster_name).
func Cluster(name string) Space { return Space("/shoal/" + name) }

// Of is the keyspace rooted at prefix; a trailing slash is dropped, so
// "/shoal/x/" and "/shoal/x" name the same space.
func Of(prefix string) Space { return Space(strings.TrimRight(prefix, "/")) }

// Root is P itself.
func (s Space) Root() string { return string(s) }

// All is the prefix of every key of the cluster ("P/").
func (s Space) All() string { return string(s) + "/" }

// Members is the prefix of the member keys.
func (s Space) Members() string { return string(s) + "/members/" }

// Member is the member key of name; its value is a MemberRecord and it
// is attached to the incarnation's lease.
func (s Space) Member(name string) string { return s.Members() + name }

// MemberName is the member name in a member key, and whether key is one.
func (s Space) MemberName(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, s.Members())
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

// Coordinator is the election prefix of the recovery coordinator (etcd
// concurrency.Election: one key per candidate, P/coordinator/LEASE).
func (s Space) Coordinator() string { return string(s) + "/coordinator" }

// Recoveries is the prefix of the recovery records.
func (s Space) Recoveries() string { return string(s) + "/recovery/" }

// Recovery is the recovery record of incarnation inc of node name.
func (s Space) Recovery(name, inc string) string { return s.Recoveries() + name + "/" + inc }

// Fences is the prefix of the fence records.
func (s Space) Fences() string { return string(s) + "/fence/" }

// Fence is the fence record of incarnation inc of node name.
func (s Space) Fence(name, inc string) string { return s.Fences() + name + "/" + inc }

// Slots is the prefix of the bitmap slot records.
func (s Space) Slots() string { return string(s) + "/slots/" }

// Slot records which write-intent bitmap slot incarnation inc of node
// name writes the volume with; it outlives the incarnation so that its
// recovery can merge that slot's bitmap.
func (s Space) Slot(name, inc string) string { return s.Slots() + name + "/" + inc }

// Volumes is the prefix of the volumes' records.
func (s Space) Volumes() string { return string(s) + "/volumes/" }

// VolumeLegs is the leg table of the volume with uuid id.
func (s Space) VolumeLegs(id string) string { return s.Volumes() + id + "/legs" }

// DLM is the prefix of every lock manager key.
func (s Space) DLM() string { return string(s) + "/dlm/" }

// DLMRequests is the prefix of the lock requests.
func (s Space) DLMRequests() string { return s.DLM() + "req/" }

// DLMOwnerRequests is the prefix of the requests of one incarnation.
func (s Space) DLMOwnerRequests(name, inc string) string {
	return s.DLMRequests() + name + "/" + inc + "/"
}

// DLMRequest is request seq of an incarnation; its create revision is its
// place in the FIFO.
func (s Space) DLMRequest(name, inc string, seq uint64) string {
	return fmt.Sprintf("%s%016x", s.DLMOwnerRequests(name, inc), seq)
}

// DLMRequestOwner reads the incarnation from a request key.
func (s Space) DLMRequestOwner(key string) (name, inc string, ok bool) {
	rest, ok := strings.CutPrefix(key, s.DLMRequests())
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// DLMValueBlocks is the prefix of the lock value blocks.
func (s Space) DLMValueBlocks() string { return s.DLM() + "lvb/" }

// DLMValueBlock is the value block of the resource named resource.
func (s Space) DLMValueBlock(resource string) string { return s.DLMValueBlocks() + resource }

// DLMRecovered is the prefix of the recovery-release records.
func (s Space) DLMRecovered() string { return s.DLM() + "recovered/" }

// DLMRecoveredOwner records that a dead incarnation's locks were released
// by recovery.
func (s Space) DLMRecoveredOwner(name, inc string) string { return s.DLMRecovered() + name + "/" + inc }

// DLMForced is the prefix of the force-release records.
func (s Space) DLMForced() string { return s.DLM() + "forced/" }

// DLMForcedRequest records that the request with key reqKey was force
// released; its suffix is the request's NAME/INC/SEQ.
func (s Space) DLMForcedRequest(reqKey string) string {
	return s.DLMForced() + strings.TrimPrefix(reqKey, s.DLMRequests())
}

// DLMCheckpoint is the lock table replica's checkpoint.
func (s Space) DLMCheckpoint() string { return s.DLM() + "checkpoint" }

// DLMCheckpointParts is the prefix of the parts of checkpoints too large
// for one etcd value (the checkpoint key then holds a manifest naming
// them).
func (s Space) DLMCheckpointParts() string { return s.DLM() + "parts/" }

// DLMCheckpointGen is the prefix of the parts of one checkpoint: rev is
// its revision in 16 hex digits (so that keys sort by it), name its
// writer's member name.
func (s Space) DLMCheckpointGen(rev, name string) string {
	return s.DLMCheckpointParts() + rev + "/" + name + "/"
}

// DLMCheckpointPart is part number part (4 decimal digits) of the
// checkpoint at rev by name.
func (s Space) DLMCheckpointPart(rev, name, part string) string {
	return s.DLMCheckpointGen(rev, name) + part
}

// DLMCheckpointPartsBefore ends the range of the parts of every checkpoint
// at a revision before rev (16 hex digits), from DLMCheckpointParts.
func (s Space) DLMCheckpointPartsBefore(rev string) string { return s.DLMCheckpointParts() + rev }

// DLMCheckpointRequest asks the live nodes for a checkpoint now: a reader
// that finds the history it needs compacted writes it.
func (s Space) DLMCheckpointRequest() string { return s.DLM() + "want-checkpoint" }

// Probe is read (never written) to prove an etcd cluster serves.
func (s Space) Probe() string { return string(s) + "/probe" }

// Store is the prefix reserved for the store's keys.
func (s Space) Store() string { return string(s) + "/store/" }

// Web is the prefix reserved for the web tier's keys.
func (s Space) Web() string { return string(s) + "/web/" }

// Member kinds.
const (
	KindNode   = "node"   // a shoald
	KindClient = "client" // a tool holding locks (lockctl acquire)
)

// MemberRecord is the value of a member key: who the incarnation is and
// where it can be reached. Membership writes it; the lock manager reads
// the incarnation from it to know whose locks die with the key.
type MemberRecord struct {
	Name        string    `json:"name"`
	Incarnation string    `json:"incarnation"`
	Kind        string    `json:"kind"`
	Lease       int64     `json:"lease"`
	ClientURL   string    `json:"client_url,omitempty"`
	PeerURL     string    `json:"peer_url,omitempty"`
	AdminURL    string    `json:"admin_url,omitempty"`
	Started     time.Time `json:"started"`
	// Slot is the member's write-intent bitmap slot on the volume, if it
	// writes the volume.
	Slot *int `json:"slot,omitempty"`
	// HeartbeatAddr is the UDP host:port of the member's direct failure
	// detector, if it runs one.
	HeartbeatAddr string `json:"heartbeat_addr,omitempty"`
	// Leaving is set by a clean shutdown just before the lease is revoked,
	// so watchers tell a departure from a death.
	Leaving bool `json:"leaving,omitempty"`
}
