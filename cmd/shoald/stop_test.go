package main

import (
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/nodetest"
)

// stopBound is what the test allows a SIGTERM'd node that cannot reach
// quorum to take to exit: the documented bound (about 3 s in the fast
// profile, see the README's "Shutdown") plus room for a loaded machine to
// schedule the process (5.1 s was seen under load). The fault it catches
// is a node that does not exit at all (killed after 20 s).
const stopBound = 10 * time.Second

// stopWithin sends SIGTERM to nd and fails unless it exits cleanly within
// stopBound.
func stopWithin(t *testing.T, nd *nodetest.Node) time.Duration {
	t.Helper()
	start := time.Now()
	err := nd.Stop()
	took := time.Since(start)
	if err != nil {
		t.Errorf("%s did not stop cleanly: %v", nd.Name, err)
	}
	if took > stopBound {
		t.Errorf("%s took %v to stop, want at most %v", nd.Name, took.Round(time.Millisecond), stopBound)
	}
	return took
}

// TestStopWithoutQuorumIsBounded stops a whole three-node cluster one node
// after the other (the last ones have no quorum left), and separately a
// node cut off from both others: each exits cleanly within the bound, and
// the legs agree afterwards (nothing acknowledged is lost).
func TestStopWithoutQuorumIsBounded(t *testing.T) {
	parallel(t)
	legs := nodetest.FileLegs(t)
	vc := newVolumeCluster(t, legs)
	const off, length = 20 << 20, 64 << 10
	for i, nd := range vc.Nodes {
		if res, err := write(nd, off+int64(i)*(2<<20), length, byte(0x30+i), 1, 0); err != nil || res.Done != 1 {
			t.Fatalf("%s's write: %+v %v", nd.Name, res, err)
		}
	}
	// The whole cluster one by one: the last one has no quorum left.
	for _, nd := range vc.Nodes {
		t.Logf("%s stopped in %v", nd.Name, stopWithin(t, nd).Round(time.Millisecond))
	}
	if out, err := runBin(t, "shoalblk", append([]string{"check"}, legs...)...); err != nil {
		t.Fatalf("shoalblk check after the stops: %v\n%s", err, out)
	}
	for _, nd := range vc.Nodes {
		nd.Start()
	}
	vc.WaitMembers(60*time.Second, 3, vc.Nodes...)
	for _, nd := range vc.Nodes {
		vc.WaitFor(30*time.Second, nd.Name+" to open the volume again", func() bool {
			_, err := read(nd, off, 4096)
			return err == nil
		})
	}
	// Each node writes again: it holds its region's lock, its bitmap marked.
	for i, nd := range vc.Nodes {
		if res, err := write(nd, off+int64(i)*(2<<20), length, byte(0x40+i), 1, 0); err != nil || res.Done != 1 {
			t.Fatalf("%s's write after the restart: %+v %v", nd.Name, res, err)
		}
	}
	// Cut node3 off: the two others stop answering (SIGSTOP).
	n1, n2, n3 := vc.Nodes[0], vc.Nodes[1], vc.Nodes[2]
	n1.Pause()
	n2.Pause()
	paused := time.Now()
	t.Logf("%s, cut off from both others, stopped in %v", n3.Name, stopWithin(t, n3).Round(time.Millisecond))
	// The pause is the fault: it lasts past the lease TTL, so the woken
	// nodes find their self-fence deadlines passed and give up their
	// incarnations too.
	time.Sleep(testTTL + time.Second - time.Since(paused))
	n1.Cont()
	n2.Cont()
	// Every node lost its incarnation with regions locked; restarted, each
	// one's volume open waits for the recovery of its predecessor, which a
	// coordinator runs meanwhile, without needing its own volume open.
	n3.Start()
	restarted := time.Now()
	vc.WaitMembers(60*time.Second, 3, vc.Nodes...)
	for _, nd := range vc.Nodes {
		vc.WaitFor(30*time.Second, nd.Name+" to open the volume after every incarnation was lost", func() bool {
			_, err := read(nd, off, 4096)
			return err == nil
		})
	}
	t.Logf("every node's volume open %v after the cut-off node restarted", time.Since(restarted).Round(time.Millisecond))
	if out, err := runBin(t, "shoalblk", append([]string{"check"}, legs...)...); err != nil {
		t.Fatalf("shoalblk check after the stops: %v\n%s", err, out)
	}
}
