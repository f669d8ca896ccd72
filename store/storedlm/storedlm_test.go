package storedlm_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storedlm"
)

var stressRounds = flag.Int("storedlm.rounds", 60, "operations per goroutine in TestTwoNodesShareDirectories")

const prefix = "/storedlm-test"

type dlmNode struct {
	cli    *clientv3.Client
	member *dlm.LeaseMember
	locks  *dlm.Node
	st     *store.Store
}

// plainLocker hides the adapter's optional abilities (OrphanReporter,
// HolderReporter), as a Locker wrapper that only forwards Lock does: the
// store then gives way on every wait it makes while holding other locks.
type plainLocker struct{ store.Locker }

func startDLMNode(t *testing.T, c *etcdtest.Cluster, dev blockdev.Device, name string, slot int, plain bool) *dlmNode {
	t.Helper()
	ctx := context.Background()
	n := &dlmNode{}
	var err error
	if n.cli, err = c.NewClientTo(c.Endpoints); err != nil {
		t.Fatal(err)
	}
	n.member, err = dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: n.cli, Prefix: prefix, Name: name, TTL: 5 * time.Second, Margin: time.Second, ElectionTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dcfg := dlm.DefaultConfig()
	dcfg.Client, dcfg.Member, dcfg.Prefix = n.cli, n.member, prefix
	dcfg.Logger = testlog.New(t, name+".dlm")
	if n.locks, err = dlm.Start(ctx, dcfg); err != nil {
		t.Fatal(err)
	}
	var locks store.Locker = storedlm.New(n.locks)
	if plain {
		locks = plainLocker{locks}
	}
	cfg := store.DefaultConfig(dev, slot, locks)
	cfg.Logger = testlog.New(t, name)
	if n.st, err = store.Open(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *dlmNode) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n.st.Close()
	n.locks.Close(ctx)
	n.member.Leave(ctx)
	n.cli.Close()
}

// Two nodes on one lock manager create files in the same directories and
// stat and list them, alternating: every lock of the shared directories
// and the allocation paths moves back and forth between them, through
// blocking callbacks, conversions and waits given up. No operation may
// wait for long: each is bounded, and one that is not done in time
// fails the test with both nodes' view of the lock table.
func TestTwoNodesShareDirectories(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := etcdtest.NewCluster(t, 1)
	defer c.Close()
	dev, err := blockdev.NewMem(16384*store.BlockSize, 512)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Format(context.Background(), dev, store.FormatOptions{Slots: 2}); err != nil {
		t.Fatal(err)
	}
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("orphanReporter=%v", !plain), func(t *testing.T) {
			nodes := []*dlmNode{
				startDLMNode(t, c, dev, "a", 0, plain),
				startDLMNode(t, c, dev, "b", 1, plain),
			}
			defer func() {
				for _, n := range nodes {
					n.stop()
				}
			}()
			top := fmt.Sprintf("plain%v", plain)
			const dirs = 3
			for d := 0; d < dirs; d++ {
				if err := nodes[0].st.MkdirAll(fmt.Sprintf("%s/d%d", top, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			const perNode = 2
			deadline := time.Now().Add(90 * time.Second)
			var wg sync.WaitGroup
			errs := make(chan error, len(nodes)*perNode)
			for i, n := range nodes {
				for k := 0; k < perNode; k++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- churn(n.st, top, fmt.Sprintf("%c%d", 'a'+i, k), dirs, *stressRounds, deadline)
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					for i, n := range nodes {
						for _, li := range n.locks.Locks() {
							t.Logf("node %c: %+v", 'a'+i, li)
						}
					}
					t.Fatal(err)
				}
			}
			for _, n := range nodes {
				n.stop()
			}
			nodes = nil
			rep, err := store.CheckDevice(context.Background(), dev)
			if err != nil {
				t.Fatal(err)
			}
			if err := rep.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// opTimeout bounds one operation of churn: far above a lock hand-over on
// a loaded machine, far below "never".
const opTimeout = 30 * time.Second

// churn creates files who-N in the directories in turn, stats the one
// just made and lists its directory, until rounds or the deadline.
func churn(st *store.Store, top, who string, dirs, rounds int, deadline time.Time) error {
	for r := 0; r < rounds && time.Now().Before(deadline); r++ {
		dir := fmt.Sprintf("%s/d%d", top, r%dirs)
		name := fmt.Sprintf("%s/%s-%d", dir, who, r)
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := st.Update(ctx, func(tx *store.Tx) error {
			return tx.WriteFile(name, []byte(name), 0o644)
		})
		if err == nil {
			err = st.View(ctx, func(tx *store.Tx) error {
				_, err := tx.Stat(name)
				return err
			})
		}
		cancel()
		if err != nil {
			return fmt.Errorf("%s round %d: %w", who, r, err)
		}
		if _, err := st.ReadDir(dir); err != nil {
			return fmt.Errorf("%s round %d: listing %s: %w", who, r, dir, err)
		}
		if _, err := st.Stat(fmt.Sprintf("%s/d%d", top, (r+1)%dirs)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s round %d: stat: %w", who, r, err)
		}
	}
	return nil
}
