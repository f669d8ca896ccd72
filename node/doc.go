// Package node assembles one Shoal node from its parts and runs it: the
// node's place in the cluster (package cluster: etcd member, lease,
// member view, admin API), the lock manager (dlm), the shared volume with
// its self-fence guard and persistent reservations (blockdev/mirror,
// fencing), the direct failure detector (fencing/detect) and the recovery
// coordinator role (fencing/recovery). The daemon, cmd/shoald, only reads
// flags and the configuration file, handles signals and calls Run; tests
// run several nodes in one process the same way.
//
//	cfg, _ := cluster.LoadFile("node1.hcl")
//	if err := cfg.Validate(); err != nil { ... }
//	err := node.Run(ctx, cfg) // until ctx ends
//
// Each incarnation (one registration with its own lease) starts its parts
// in this order and stops them in the reverse order: the lock manager,
// then the volume under its region locks, then the failure detector, then
// the parts given to Start (the store, the web tier: see Part, Mounter
// and Replayer):
//
//	n, err := node.Start(ctx, cfg, webPart, ...)
//	...
//	err = n.Stop() // bounded by StopTimeout
//
// internal/nodetest runs several nodes in one test process, each behind
// a network link the test can cut (Kill, Partition), freeze (Pause) and
// restore (Heal).
package node
