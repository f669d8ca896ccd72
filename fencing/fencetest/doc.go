// Package fencetest is an in-memory SCSI-3 persistent-reservation target:
// the twin of a tgtd LUN for unit tests of fencing and recovery.
//
// A Target holds a small byte array, the registrations of every initiator
// (I_T nexus) and the reservation, and answers the way SPC-4 says a device
// server does for the commands Shoal uses. Each Initiator is one node's
// connection to the target and implements blockdev.Device and
// blockdev.Reservations; its writes fail with blockdev.ErrReservationConflict
// once it has been preempted under a Write Exclusive - Registrants Only
// reservation.
//
//	tgt := fencetest.NewTarget(fencetest.Options{Size: 1 << 20, NoPreemptAndAbort: true})
//	a, b := tgt.Initiator("node1"), tgt.Initiator("node2")
//	// node1 and node2 register and reserve through fencing.ReservationFencer;
//	// after node2 preempts node1's key, a.WriteAt fails with a conflict.
package fencetest
