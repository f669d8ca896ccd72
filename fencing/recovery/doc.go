// Package recovery is the recovery coordinator's engine: it carries a dead
// or suspected node incarnation through the recovery order of the design,
//
//	fence -> record-fence (revoke lease) -> resync (and release region locks) -> replay-journal -> release-locks -> done
//
// recording every finished step in etcd under
// <prefix>/recovery/<node>/<incarnation>, so that when the coordinator
// dies mid-way the newly elected one resumes at the first unfinished step
// and never repeats a recorded step. Recovery never goes past the fence
// while the fence fails: the fence is retried with back-off and the
// failure is recorded for `shoald status`.
//
// Record holds the deterministic core (which step is next, how a result
// changes the record); Engine runs steps against a Store (EtcdStore, or
// MemStore in tests), a fencing.Fencer and the Hooks that the store, the
// mirror and the DLM provide; Coordinator is the etcd shell: it campaigns
// for <prefix>/coordinator, and while elected runs every requested
// recovery, several victims at once. Writes of a deposed coordinator are
// refused by a transaction guarded on its election key.
//
// Usage in the daemon:
//
//	coord, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
//		Client: cli, Lease: sess, Prefix: "/shoal", // sess: the node's cluster.Session
//		Self:   self, // this incarnation's fencing.NodeRef
//		Engine: recovery.Config{
//			Name:    self.String(),
//			Fencer:  chain,      // fencing.Chain of reservation / agent / lease fencers
//			Hooks:   hooks,      // store replay, mirror resync, DLM release
//			Backoff: fencing.DefaultBackoff(),
//			Logger:  log,
//		},
//	})
//	go func() {
//		// Campaigns; recovers while elected. ErrSelfSuspected: the others
//		// are recovering this incarnation: stop I/O and rejoin as a new one.
//		// Any other error while the lease stands: campaign again.
//		err := coord.Run(ctx)
//	}()
//	// on any node, when the failure detector or the lease says a peer died:
//	coord.Request(ctx, victim)
//	// for `shoald status` and `lockctl ls`:
//	recs, err := recovery.List(ctx, cli, "/shoal")
package recovery
