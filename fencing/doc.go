// Package fencing cuts a dead or suspected node off from the shared
// volume, so that its late writes can never reach the disk, and makes a
// node cut itself off when it can no longer trust its lease.
//
// A Fencer fences one node incarnation (NodeRef). The methods are:
//
//   - ReservationFencer: SCSI-3 persistent reservations. Every live node
//     registers its own key (KeyFor: unique per incarnation) on every leg
//     with Join, the volume holds a Write Exclusive - Registrants Only
//     reservation, and fencing preempts the victim's key on every leg
//     (PREEMPT AND ABORT where the target has it, PREEMPT otherwise) and
//     checks with READ KEYS that it is gone.
//   - AgentFencer: an external fence agent in the fence-agents calling
//     convention (options on stdin, exit status 0 for success), killed
//     with its process group at the timeout.
//   - LeaseFencer: lease-only mode for legs without reservations: the
//     victim counts as fenced once its etcd lease is gone and the
//     self-fence margin has passed.
//
// Chain tries methods in order until one succeeds; All requires each of
// them (reservations on the legs that have them plus the lease for the
// legs that do not). Retrying adds back-off and a status hook; Metrics
// exports attempts to Prometheus. SelfFence stops a node's volume I/O at
// its self-fence deadline and can pet a watchdog device; Guard is the gate
// in front of the volume that refuses I/O past the deadline (a paused node
// that wakes up late writes nothing) and fails what is in flight on Stop.
//
// The recovery order that runs the fence and what follows it lives in
// package fencing/recovery; the peer failure detector in fencing/detect;
// an in-memory reservation target for tests in fencing/fencetest.
//
// Usage:
//
//	self := fencing.NewNodeRef(member.Name(), member.Incarnation(), int64(member.LeaseID()))
//	pr, err := fencing.NewReservationFencer(fencing.ReservationConfig{
//		Self: self,
//		Legs: func() []fencing.Leg { return fencing.LegsByIndex(volume.LegDevices()) },
//		Logger: log,
//	})
//	if err := pr.Join(ctx); err != nil { ... } // before the first write
//	agent, err := fencing.NewAgentFencer(fencing.DefaultAgentConfig("/usr/sbin/fence_ipmilan"))
//	chain, err := fencing.NewChain(log,
//		fencing.Method{Name: "reservations", Fencer: pr},
//		fencing.Method{Name: "ipmi", Fencer: agent})
//	err = chain.Fence(ctx, victim) // nil: victim can no longer write
//
//	guard := fencing.NewGuard(member.Deadline, nil)
//	leg = guard.Wrap(leg) // every leg the volume writes through
//	sf, err := fencing.NewSelfFence(fencing.SelfFenceConfig{
//		Deadline: member.Deadline, Lost: member.Lost(),
//		StopIO:   guard.Stop, Watchdog: "/dev/watchdog",
//	})
//	go sf.Run(ctx)
package fencing
