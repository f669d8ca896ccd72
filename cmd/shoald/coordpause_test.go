package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

var coordPauseRuns = flag.Int("coordpause.runs", 1, "how many times TestPausedCoordinatorIsReplaced pauses the coordinator (a campaign: run with -coordpause.runs=20)")

// coordinatorOf waits until exactly one node says it is the coordinator
// and every given node's status names that node.
func coordinatorOf(t *testing.T, c *nodetest.Cluster, timeout time.Duration, nodes ...*nodetest.Node) *nodetest.Node {
	t.Helper()
	var coord *nodetest.Node
	c.WaitFor(timeout, "exactly one coordinator, named by every node's status", func() bool {
		coord = nil
		for _, nd := range nodes {
			v, err := nd.View()
			if err != nil {
				return false
			}
			if v.Coordinator {
				if coord != nil {
					return false
				}
				coord = nd
			}
		}
		if coord == nil {
			return false
		}
		for _, nd := range nodes {
			if st, err := nd.Status(); err != nil || st.Coordinator != coord.Name {
				return false
			}
		}
		return true
	})
	return coord
}

// TestPausedCoordinatorIsReplaced: the recovery coordinator holds an EX
// region lock (cached after its write) and is stopped (SIGSTOP) past its
// lease TTL; a third node then writes the same region. Another node must
// become coordinator, recover the paused one and let the write through;
// status must name the new coordinator; the woken node must come back as
// one new incarnation that opens the volume, leaving no recovery behind.
// With -coordpause.runs=N the pause is repeated N times on one cluster and
// each recovery time (pause to the third node's acknowledged write) is
// logged.
func TestPausedCoordinatorIsReplaced(t *testing.T) {
	parallel(t)
	vc := newVolumeCluster(t, nodetest.FileLegs(t))
	var times []time.Duration
	for run := 1; run <= *coordPauseRuns; run++ {
		vc.WaitMembers(30*time.Second, 3, vc.Nodes...)
		for _, nd := range vc.Nodes {
			vc.WaitFor(30*time.Second, nd.Name+" to read the volume", func() bool {
				_, err := read(nd, 0, 4096)
				return err == nil
			})
		}
		losses := map[string]int{}
		for _, nd := range vc.Nodes {
			if v, err := nd.View(); err == nil {
				losses[nd.Name] = v.LeaseLosses
			}
		}
		coord := coordinatorOf(t, vc.Cluster, 20*time.Second, vc.Nodes...)
		leader := etcdLeader(t, vc.Cluster, coord)
		var others []*nodetest.Node
		for _, nd := range vc.Nodes {
			if nd != coord {
				others = append(others, nd)
			}
		}
		writer, third := others[0], others[1]
		inc, _ := coord.Members()
		coordInc := inc[coord.Name]
		off := int64(run%8+1) << 20
		const length = 64 << 10
		pattern := byte(0x10 + run)
		if res, err := write(coord, off, length, pattern, 1, 0); err != nil || res.Done != 1 {
			t.Fatalf("run %d: the coordinator's write: %+v %v", run, res, err)
		}
		if res, err := write(writer, off+(16<<20), length, pattern, 1, 0); err != nil || res.Done != 1 {
			t.Fatalf("run %d: %s's write: %+v %v", run, writer.Name, res, err)
		}
		coord.Pause()
		paused := time.Now()
		res, err := write(third, off, length, pattern+0x80, 1, 0)
		if err != nil || res.Done != 1 {
			coord.Cont()
			t.Fatalf("run %d: %s's write after the coordinator paused: %+v %v", run, third.Name, res, err)
		}
		took := time.Unix(0, res.Acked[0]).Sub(paused)
		times = append(times, took)
		newCoord := coordinatorOf(t, vc.Cluster, 10*time.Second, others...)
		t.Logf("run %d: paused coordinator %s (etcd leader host: %v); %s became coordinator; %s's write acknowledged %v after the pause",
			run, coord.Name, leader == coord, newCoord.Name, third.Name, took.Round(time.Millisecond))
		for _, nd := range others {
			if v, err := nd.View(); err == nil && v.LeaseLosses > losses[nd.Name] {
				t.Logf("run %d: survivor %s lost its lease while %s was paused", run, nd.Name, coord.Name)
			}
		}
		recoveryDone(t, vc, third, coord.Name, coordInc)
		coord.Cont()
		// The woken node comes back as a new incarnation that opens the
		// volume, and every recovery is finished.
		var back, why string
		err = testutil.Poll(30*time.Second, func() bool {
			m, err := third.Members()
			if err != nil || m[coord.Name] == "" || m[coord.Name] == coordInc {
				why = fmt.Sprintf("%s not back as a new incarnation (%v)", coord.Name, err)
				return false
			}
			back = m[coord.Name]
			data, err := read(coord, off, length)
			if err != nil {
				why = fmt.Sprintf("%s cannot read the region: %v", coord.Name, err)
				return false
			}
			if !bytes.Equal(data, bytes.Repeat([]byte{pattern + 0x80}, length)) {
				why = fmt.Sprintf("%s reads %#x..., not %s's data %#x", coord.Name, data[:4], third.Name, pattern+0x80)
				return false
			}
			recs, err := recoveriesOf(third)
			if err != nil {
				why = err.Error()
				return false
			}
			for _, r := range recs {
				if !r.Done() {
					why = fmt.Sprintf("the recovery of %s is at %s", r.Victim, r.Next())
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("run %d: the woken coordinator is not back within 30s: %s", run, why)
		}
		recs, err := recoveriesOf(third)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Victim.Name == coord.Name && r.Victim.Incarnation != coordInc && r.Victim.Incarnation != back && r.Requested.After(paused) {
				t.Fatalf("run %d: the woken node left an abandoned incarnation %s behind (recovery at %s)", run, r.Victim.Incarnation, r.Next())
			}
		}
	}
	slices.Sort(times)
	t.Logf("coordinator pause to the third node's write, %d runs: min %v, median %v, max %v, all %v",
		len(times), times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), times)
	for _, d := range times {
		if d > testTTL+8*time.Second {
			t.Errorf("a recovery took %v: want about the lease TTL (%v) plus the fence margin and a second", d, testTTL)
		}
	}
}

// recoveriesOf reads every recovery record through nd's admin API.
func recoveriesOf(nd *nodetest.Node) ([]recovery.Record, error) {
	client := nd.AdminClient(5 * time.Second)
	resp, err := client.Get(nd.AdminURL() + "/api/recoveries")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/api/recoveries: %s", resp.Status)
	}
	var recs []recovery.Record
	err = json.NewDecoder(resp.Body).Decode(&recs)
	return recs, err
}
