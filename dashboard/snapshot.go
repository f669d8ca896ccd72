package dashboard

import "time"

// Snapshot is one moment of the cluster as the serving node sees it: the
// JSON document each server-sent event carries. Durations are in
// milliseconds and times in RFC 3339 UTC, so the page needs no parsing of
// Go durations.
type Snapshot struct {
	// Time is when the reading was taken.
	Time time.Time `json:"time"`
	// Node is the node that serves the page; Cluster its cluster name.
	Node    string `json:"node"`
	Cluster string `json:"cluster"`
	// Ready is whether the serving node holds a trusted lease.
	Ready bool `json:"ready"`
	// Nodes lists every node seen since the dashboard started, sorted by
	// name: the live ones and the ones that died or left.
	Nodes []NodeRow `json:"nodes"`
	// Etcd is the health of the cluster's etcd quorum.
	Etcd EtcdRow `json:"etcd"`
	// Locks is the lock table in figures; nil while the lock manager is
	// not running on the serving node.
	Locks *LockFigures `json:"locks,omitempty"`
	// Volume is the shared volume; nil when the node has none.
	Volume *VolumeRow `json:"volume,omitempty"`
	// Recoveries lists the unfinished recoveries and the most recent
	// finished ones, newest first.
	Recoveries []RecoveryRow `json:"recoveries"`
	// Traffic is the web tier's traffic per node; empty while no web tier
	// serves.
	Traffic []TrafficRow `json:"traffic"`
	// Services are the service addresses and their holders; empty until
	// the cluster manages service addresses.
	Services []ServiceRow `json:"services"`
	// Availability is the series of live members over the last window,
	// oldest first.
	Availability []AvailabilityPoint `json:"availability"`
	// WindowMS is the length of the availability window in milliseconds.
	WindowMS int64 `json:"window_ms"`
	// Problems are the parts that could not be read this time (etcd
	// requests that failed, a lock manager not running).
	Problems []string `json:"problems,omitempty"`
}

// Node states shown on the board.
const (
	// StateUp: a registered member with a live lease.
	StateUp = "up"
	// StateLeaving: a member shutting down cleanly.
	StateLeaving = "leaving"
	// StateDown: the member's lease is gone and no recovery is recorded
	// yet (or the recovery could not be read).
	StateDown = "down"
	// StateRecovering: the cluster is recovering the dead incarnation.
	StateRecovering = "recovering"
	// StateRecovered: the dead incarnation is recovered; the node has not
	// come back yet.
	StateRecovered = "recovered"
	// StateLeft: the node left the cluster cleanly.
	StateLeft = "left"
)

// NodeRow is one node on the board.
type NodeRow struct {
	Name string `json:"name"`
	// State is one of StateUp, StateLeaving, StateDown, StateRecovering,
	// StateRecovered, StateLeft.
	State string `json:"state"`
	// Incarnation is the member's current (or last seen) incarnation.
	Incarnation string `json:"incarnation"`
	// LeaseLeftMS is the lease time left in milliseconds as etcd reports
	// it (the serving node's own row: its trust time left); -1 unknown.
	LeaseLeftMS int64 `json:"lease_left_ms"`
	// Coordinator is whether the node is the recovery coordinator.
	Coordinator bool `json:"coordinator"`
	// EtcdLeader is whether the node's etcd member leads the quorum.
	EtcdLeader bool `json:"etcd_leader"`
	// Self marks the node that serves the page.
	Self bool `json:"self"`
	// Since is when the node entered its state, as this dashboard saw it.
	Since time.Time `json:"since"`
	// Slot is the member's bitmap slot on the volume, if it writes it.
	Slot *int `json:"slot,omitempty"`
	// AdminURL is the member's admin API, if it announces one.
	AdminURL string `json:"admin_url,omitempty"`
	// Step is the recovery step in progress while State is
	// StateRecovering.
	Step string `json:"step,omitempty"`
}

// EtcdRow is the etcd quorum's health.
type EtcdRow struct {
	// Mode is "embedded" or "external".
	Mode string `json:"mode"`
	// Healthy is whether the serving node could read the member list and
	// find a leader.
	Healthy bool   `json:"healthy"`
	Leader  string `json:"leader"`
	// Members are the etcd members, sorted by name.
	Members []EtcdMemberRow `json:"members"`
}

// EtcdMemberRow is one etcd member.
type EtcdMemberRow struct {
	Name    string `json:"name"`
	Leader  bool   `json:"leader"`
	Learner bool   `json:"learner,omitempty"`
	// Live is whether a cluster node of that name holds a live lease
	// (embedded mode: the member runs inside it).
	Live bool `json:"live"`
}

// LockFigures is the lock table in figures.
type LockFigures struct {
	// Held counts granted requests by mode name (NL, CR, CW, PR, PW, EX).
	Held map[string]int `json:"held"`
	// Waiters counts requests waiting for a grant or a conversion.
	Waiters int `json:"waiters"`
	// Orphans counts requests whose owner is dead and that recovery has
	// not released yet.
	Orphans int `json:"orphans"`
	// DeadOwners names the dead incarnations that still own requests.
	DeadOwners []string `json:"dead_owners,omitempty"`
	// Cycles lists wait-for cycles, each as owner names in order.
	Cycles [][]string `json:"cycles,omitempty"`
	// Resources counts the distinct resources with requests.
	Resources int `json:"resources"`
	// Check is "ok" or the lock table check's complaint.
	Check string `json:"check"`
}

// VolumeRow is the shared volume.
type VolumeRow struct {
	Name       string   `json:"name"`
	SizeBytes  int64    `json:"size_bytes"`
	Regions    int64    `json:"regions"`
	Generation uint64   `json:"generation"`
	Legs       []LegRow `json:"legs"`
	// DirtyRegions counts regions marked in any slot's bitmap.
	DirtyRegions int64 `json:"dirty_regions"`
	// Work is the long operation in progress on the serving node
	// (recover, resync, scrub, verify), if any.
	Work *WorkRow `json:"work,omitempty"`
}

// LegRow is one leg of the volume.
type LegRow struct {
	Index  int    `json:"index"`
	Addr   string `json:"addr"`
	State  string `json:"state"`
	Online bool   `json:"online"`
	// Resync is the fraction (0..1) of the leg already resynced while it
	// is resyncing; 1 for a leg in sync.
	Resync float64 `json:"resync"`
}

// WorkRow is a long volume operation and its progress.
type WorkRow struct {
	Op    string `json:"op"`
	Leg   string `json:"leg,omitempty"`
	Done  int64  `json:"done"`
	Total int64  `json:"total"`
}

// RecoveryRow is one recovery, step by step.
type RecoveryRow struct {
	// ID names the recovery as the logs do: victim/incarnation.
	ID          string    `json:"id"`
	Victim      string    `json:"victim"`
	Incarnation string    `json:"incarnation"`
	Coordinator string    `json:"coordinator"`
	Requested   time.Time `json:"requested"`
	Done        bool      `json:"done"`
	// TookMS is the time from request to done (or until now).
	TookMS int64     `json:"took_ms"`
	Steps  []StepRow `json:"steps"`
	// LastError is the failing step's last error.
	LastError string `json:"last_error,omitempty"`
}

// Step states.
const (
	StepFinished = "done"
	StepRunning  = "running"
	StepFailing  = "failing"
	StepPending  = "pending"
)

// StepRow is one step of a recovery.
type StepRow struct {
	Name string `json:"name"`
	// State is StepFinished, StepRunning, StepFailing or StepPending.
	State string `json:"state"`
	// TookMS is the step's duration once finished, or how long it has
	// been running.
	TookMS   int64 `json:"took_ms"`
	Attempts int   `json:"attempts,omitempty"`
	// Outcome says what a finished step did: how the victim was fenced,
	// how many records, regions or locks it handled.
	Outcome string `json:"outcome,omitempty"`
}

// TrafficRow is one node's web traffic over the last sampling interval.
type TrafficRow struct {
	Node              string  `json:"node"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	ErrorsPerSecond   float64 `json:"errors_per_second"`
	P99MS             float64 `json:"p99_ms"`
}

// ServiceRow is one service address and the node that holds it.
type ServiceRow struct {
	Addr   string `json:"addr"`
	Holder string `json:"holder"`
}

// AvailabilityPoint is one sample of the availability series.
type AvailabilityPoint struct {
	Time time.Time `json:"t"`
	// Up counts live members, Known every node seen.
	Up    int `json:"up"`
	Known int `json:"known"`
	// Ready is whether the serving node held a trusted lease.
	Ready bool `json:"ready"`
}
