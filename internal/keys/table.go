package keys

// Entry is one row of the keyspace table.
type Entry struct {
	// Pattern is the key with P for the root and upper-case words for
	// the variable parts, as in the package doc's table.
	Pattern string
	// Value names the value's type.
	Value string
	// Lease says whether the key is attached to its writer's lease.
	Lease bool
	// Example builds a key of this row in space s.
	Example func(s Space) string
}

// Table lists every key of the cluster, in the order of the package doc.
var Table = []Entry{
	{"P/members/NAME", "MemberRecord", true, func(s Space) string { return s.Member("NAME") }},
	{"P/coordinator/LEASE", "NAME/INCARNATION", true, func(s Space) string { return s.Coordinator() + "/LEASE" }},
	{"P/recovery/NAME/INC", "recovery.Record", false, func(s Space) string { return s.Recovery("NAME", "INC") }},
	{"P/fence/NAME/INC", "recovery.FenceRecord", false, func(s Space) string { return s.Fence("NAME", "INC") }},
	{"P/slots/NAME/INC", "bitmap slot", false, func(s Space) string { return s.Slot("NAME", "INC") }},
	{"P/volumes/UUID/legs", "etcdstate record", false, func(s Space) string { return s.VolumeLegs("UUID") }},
	{"P/dlm/req/NAME/INC/SEQ", "dlm request", true, func(s Space) string {
		return s.DLMOwnerRequests("NAME", "INC") + "SEQ"
	}},
	{"P/dlm/lvb/RESOURCE", "dlm value block", false, func(s Space) string { return s.DLMValueBlock("RESOURCE") }},
	{"P/dlm/recovered/NAME/INC", "dlm recovery release", false, func(s Space) string { return s.DLMRecoveredOwner("NAME", "INC") }},
	{"P/dlm/forced/NAME/INC/SEQ", "dlm forced release", false, func(s Space) string {
		return s.DLMForcedRequest(s.DLMOwnerRequests("NAME", "INC") + "SEQ")
	}},
	{"P/dlm/checkpoint", "dlm replica checkpoint", false, func(s Space) string { return s.DLMCheckpoint() }},
	{"P/dlm/parts/REV/NAME/PART", "dlm checkpoint part (bytes)", false, func(s Space) string { return s.DLMCheckpointPart("REV", "NAME", "PART") }},
	{"P/dlm/want-checkpoint", "dlm checkpoint request", false, func(s Space) string { return s.DLMCheckpointRequest() }},
	{"P/probe", "never written", false, func(s Space) string { return s.Probe() }},
	{"P/store/...", "reserved for the store", false, func(s Space) string { return s.Store() + "..." }},
	{"P/web/...", "reserved for the web tier", false, func(s Space) string { return s.Web() + "..." }},
}
