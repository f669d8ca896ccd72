// Package cluster is the node's place in the cluster: its etcd member (or
// its client of an external etcd), its lease and self-fence deadline, the
// live member view with node-up/down events, the recovery coordinator
// election and the admin HTTP API. Package node assembles a whole node on
// top of it; the daemon (cmd/shoald) is a thin shell around that.
//
// Its keys (members/NAME, the coordinator election) are defined, with
// every other key of the cluster, in internal/keys.
//
// Running a node:
//
//	cfg, err := cluster.LoadFile("node1.hcl") // or cluster.DefaultConfig()
//	if err != nil { ... }
//	if err := cfg.Validate(); err != nil { ... } // names the wrong field
//	n, err := cluster.Start(ctx, cfg)           // data dir, TLS, etcd member
//	if err != nil { ... }
//	defer n.Close()
//	n.Watcher().Subscribe(func(ev cluster.Event) { ... }) // node up/down
//	err = n.Run(ctx, cluster.Parts{Role: role}) // registers, keeps the lease, re-registers after a loss
//
// A tool that holds locks without running a node registers an incarnation
// of kind "client" with Register and uses the Session as its dlm.Member.
package cluster
