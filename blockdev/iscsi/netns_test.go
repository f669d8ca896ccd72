package iscsi_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fixtures/netns"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// TestLinkCutInNamespaces runs the target in one namespace and the
// initiator's connection from another, cuts the initiator's link for two
// seconds mid-I/O and heals it. The keepalive notices the dead link, the
// session logs in again after the heal, and no write is reported wrongly.
func TestLinkCutInNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the link-cut test in -short mode")
	}
	t.Run("keepalive", func(t *testing.T) {
		linkCut(t, true, func(cfg *iscsi.Config) {
			cfg.NopInterval, cfg.NopTimeout = 300*time.Millisecond, 800*time.Millisecond
			cfg.CommandTimeout = 3 * time.Second
		})
	})
	// Without keepalive, the command timeout finds the dead link: the
	// commands are aborted, and when the abort goes unanswered too the
	// connection is dropped. (An abort that gets through once the link is
	// back ends the commands without a new login, and a command answered
	// before its abort ends well.)
	t.Run("command timeout", func(t *testing.T) {
		linkCut(t, false, func(cfg *iscsi.Config) {
			cfg.NopInterval = 0
			cfg.CommandTimeout = time.Second
		})
	})
}

func linkCut(t *testing.T, mustRelogin bool, tune func(*iscsi.Config)) {
	net := netns.NewT(t, netns.Config{})
	tgtHost := net.MustAddHost(t, "target")
	node := net.MustAddHost(t, "node1")
	rig := tgtrig.StartT(t, tgtrig.Config{Address: tgtHost.Addr.String(), Port: 3260, Wrap: tgtHost.Wrap()})
	tgt := rig.MustAddTarget(t, testIQN+":netns")
	const size = 8 << 20
	tgt.MustAddLUN(t, 1, size)

	cfg := testConfig(t, tgt, 1)
	cfg.Dial = node.Dial
	cfg.AbortTimeout = time.Second
	tune(&cfg)
	cfg.DialTimeout = time.Second
	cfg.ReconnectAttempts, cfg.ReconnectDelay, cfg.ReconnectMaxDelay = 40, 100*time.Millisecond, 500*time.Millisecond
	d := openDevice(t, cfg)
	ctx := testCtx(t)

	const workers = 4
	const region = size / workers
	m := newLUNModel(workers, region)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for i := 0; i < 100_000; i++ { // until stop; the count only bounds the loop
				select {
				case <-stop:
					return
				default:
				}
				blocks := 1 + rng.IntN(256)
				first := rng.IntN(region/512 - blocks)
				off := int64(w)*region + int64(first)*512
				if err := m.write(ctx, d, rng, w, first, blocks, off); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	// Cut mid-I/O: once writes flow. A worker's failure ends the waits
	// early; its error is reported below.
	failed := func() bool { return len(errs) > 0 }
	testutil.WaitFor(t, 30*time.Second, "writes before the cut", func() bool { return m.doneWrites() >= workers || failed() })
	if err := net.Cut("node1"); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the fault: the link stays down this long
	if err := net.Heal("node1"); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	// The session carries writes again after the heal before the workers
	// stop.
	healed := m.doneWrites()
	testutil.WaitFor(t, 60*time.Second, "writes done after the heal", func() bool { return m.doneWrites() >= healed+2*workers || failed() })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for w := 0; w < workers; w++ {
		got := make([]byte, region)
		if err := d.ReadAt(ctx, got, int64(w)*region); err != nil {
			t.Fatal(err)
		}
		if err := check(m.regions[w], got); err != nil {
			t.Fatalf("region %d: %v", w, err)
		}
	}
	st := d.Session().Stats()
	t.Logf("writes done %d, outcome unknown %d, logins %d, aborts %d", m.done, m.unknown, st.Logins, st.Aborts)
	if mustRelogin && st.Logins < 2 {
		t.Fatal("the cut did not force a new login")
	}
	// Without a new login the command timeout must have acted: aborts
	// were sent. Their commands may still end well (the target's answer,
	// retransmitted once the link is back, can beat the abort), so an
	// abort need not leave a write of unknown outcome.
	if st.Logins < 2 && st.Aborts == 0 {
		t.Fatal("the cut went unnoticed: no new login and no abort")
	}
}
