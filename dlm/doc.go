// Package dlm is Shoal's distributed lock manager: named resources and
// byte-range region locks over a volume, in the six classic modes (NL, CR,
// CW, PR, PW, EX), owned by a node incarnation's etcd lease.
//
// The core is Table, a deterministic lock table driven by ordered events
// (requests, conversions, releases, deaths, value-block writes) that
// returns decisions (grants with fencing tokens and value blocks, blocking
// callbacks, refusals, orphans). Waiters are granted in FIFO order per
// resource, conversions first; a grant never jumps a conflicting waiter
// queued ahead of it, so readers cannot starve a writer. Table.Check
// verifies its invariants.
//
// Node is the shell: every node follows the DLM's keys through a single
// long-lived etcd watch and feeds the same events to its own Replica, so
// all nodes compute the same grants without talking to each other. A
// request is a key P/dlm/req/NODE/INC/SEQ whose revision is its place in
// the queue; every write is a transaction guarded by the member key's
// lease, so a node that lost its lease can no longer queue or convert.
// Grants are cached: a node keeps a lock after its local users release it,
// re-grants it locally without any etcd request, and gives it up (or
// down-converts) when another node's conflicting request produces a
// blocking callback and its local users are done.
//
// A node fences itself when its Member's deadline passes on its own clock
// (before the cluster may consider the lease expired): Lock.Use and every
// other call then return ErrLeaseLost, and Node.Audit shows the last use
// was before the deadline. When an incarnation dies its granted locks
// become orphans that only Recovery requests (the recovery coordinator's)
// are granted over, until the coordinator calls Node.ReleaseDead; other
// resources keep being granted meanwhile.
//
// Usage:
//
//	m, _ := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: cli, Prefix: "/shoal", Name: "node1", TTL: 5 * time.Second, Margin: time.Second, ElectionTimeout: time.Second})
//	cfg := dlm.DefaultConfig()
//	cfg.Client, cfg.Member, cfg.Prefix = cli, m, "/shoal"
//	node, err := dlm.Start(ctx, cfg)
//	...
//	l, err := node.Acquire(ctx, dlm.Region("vol0", 0, 1<<20), dlm.EX)
//	if err != nil { ... }
//	if err := l.Use(); err != nil { ... } // right before touching the region
//	write(l.Token(), ...)                  // storage can reject stale tokens
//	l.Release()                            // the node keeps it cached
//
// The coordinator of a recovery:
//
//	node.WaitDead(ctx, dead)
//	rl, _ := node.Acquire(ctx, res, dlm.EX, dlm.Recovery())
//	... fence, replay the journal ...
//	rl.Release()
//	node.ReleaseDead(ctx, dead)
//
// Grants follow from the order of events and are not stored, so a node
// that joins restores the newest checkpoint (an exact copy of a replica,
// written by some node every Config.CheckpointInterval) and replays only
// the events after it. A checkpoint larger than one etcd request allows
// is written in parts under a manifest (Config.CheckpointPartBytes). When
// etcd has compacted past the newest
// checkpoint, the joiner (or a listing such as lockctl ls) asks the live
// nodes for one at once through the want-checkpoint key; with no live
// node to answer it fails with ErrCompacted.
//
// Deadlocks: a waiter that asks for FailOnDeadlock may be chosen as the
// victim of a wait-for cycle. Every replica names the same victim (the
// request of the cycle that asked for it and was queued last, see
// Table.DeadlockVictims), so exactly one side of a conversion deadlock
// fails with ErrDeadlock and the other is granted once the victim lets
// go.
//
// A clean Close gives every lock up: the value blocks written by PW and
// EX holders, cached locks included, reach etcd before the requests are
// withdrawn. A node that dies instead leaves them invalid for the next
// holder, never stale.
package dlm
