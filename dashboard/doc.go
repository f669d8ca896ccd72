// Package dashboard serves a node's live operations dashboard at /ui/:
// the nodes with their state, incarnation, lease time left and roles
// (recovery coordinator, etcd leader), etcd health, the lock table in
// figures (holds by mode, waiters, orphans, wait-for cycles), the volume's
// legs with resync and scrub progress, each recovery step by step with its
// duration, web traffic per node, and availability over the last hour.
//
// The page and its script are embedded in the binary; the browser fetches
// nothing from outside the node. The page never reloads: it follows a
// server-sent event stream (text/event-stream, WHATWG HTML section 9.2)
// that carries one JSON Snapshot per sampling interval.
//
// The package has a deterministic core and a thin shell. Board turns
// successive Readings of a node into Snapshots with no goroutine and no
// clock of its own: it remembers the nodes it has seen (a killed node
// stays on the board as down until it returns), keeps the availability
// series, and derives rates from the web tier's counters. Server is the
// shell: it reads a Source every Config.Interval, feeds the Board and
// fans each Snapshot out to the open event streams.
//
// Usage, in the node's wiring:
//
//	cfg := dashboard.DefaultConfig()
//	cfg.Source = src // the node: Status, Locks, Recoveries, Volume, Traffic
//	cfg.Logger = log.Named("dashboard")
//	ui, err := dashboard.New(cfg)
//	if err != nil { ... }
//	go ui.Run(ctx)
//	mux.Handle("/ui/", ui) // behind the admin API's authentication
package dashboard
