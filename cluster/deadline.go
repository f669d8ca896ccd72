package cluster

import "time"

// leaseDeadline tracks, on the node's own clock, until when the node may
// trust its lease. The server starts a renewal's TTL when it receives the
// request, which is never before the node sent it, so counting from the
// send time and stopping a margin early means the node has stopped before
// any other node can see the lease expire.
type leaseDeadline struct {
	margin   time.Duration
	deadline time.Time
}

// renewed records a renewal sent at sentAt that the server confirmed with
// ttl. A confirmation never moves the deadline backwards.
func (d *leaseDeadline) renewed(sentAt time.Time, ttl time.Duration) {
	next := sentAt.Add(ttl - d.margin)
	if next.After(d.deadline) {
		d.deadline = next
	}
}

// valid reports whether the lease may still be trusted at now.
func (d *leaseDeadline) valid(now time.Time) bool { return now.Before(d.deadline) }

// left is how long the lease may still be trusted at now (never negative).
func (d *leaseDeadline) left(now time.Time) time.Duration {
	if l := d.deadline.Sub(now); l > 0 {
		return l
	}
	return 0
}
