package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestCoordinatorRecoversItsOwnEarlierIncarnation: a node cut off past
// its TTL comes back as a new incarnation and, as the coordinator, recovers
// its own earlier incarnation, whose bitmap slot is its own live slot now
// (its volume open recovered it). The recovery must finish, not retry the
// resync of a live slot forever.
func TestCoordinatorRecoversItsOwnEarlierIncarnation(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 1, nodetest.InProcOptions{FileLegs: true})
	nd := c.Nodes[0]
	cn := nd.Node().Cluster()
	old := cn.Session().Incarnation()
	nd.Partition()
	testutil.WaitFor(t, 20*time.Second, "the cut-off node to lose its incarnation", func() bool {
		s := cn.Session()
		return s == nil || s.Incarnation() != old
	})
	nd.Heal()
	testutil.WaitForNil(t, 30*time.Second, "the recovery of the earlier incarnation done", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		recs, err := recovery.List(ctx, cn.Client(), cn.Config().Prefix())
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.Victim.Incarnation == old {
				if r.Done() {
					return nil
				}
				return fmt.Errorf("at %s (%s)", r.Next(), r.LastError)
			}
		}
		return fmt.Errorf("no recovery of %s requested", old)
	})
}
