// Package detect is the direct peer failure detector: nodes send each
// other small UDP heartbeats, and a peer that stays silent longer than the
// configured timeout is suspected, well before its etcd lease expires.
//
// Suspicion is only a trigger. With persistent-reservation fencing the
// coordinator may start recovering a suspected node at once, because the
// fence is what makes that safe; a node suspected wrongly is fenced and
// must rejoin as a new incarnation. Without reservations the daemon must
// ignore suspicions and wait for the lease (fencing.LeaseFencer).
//
// Detector is the deterministic core on an injected clock; UDP is the
// shell that sends and receives the heartbeats.
//
//	d, err := detect.NewUDP(detect.UDPConfig{
//		Self:     detect.Peer{Name: "node1", Incarnation: inc},
//		Listen:   "127.0.0.1:7947",
//		Peers:    func() map[string]detect.Endpoint { return fromMembership() },
//		Detector: detect.DefaultConfig(),
//		OnSuspect: func(s detect.Suspicion) {
//			coord.Request(ctx, victimOf(s.Peer)) // recovery.Coordinator
//		},
//	})
//	go d.Run(ctx)
package detect
