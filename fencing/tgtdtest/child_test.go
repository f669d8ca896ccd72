package tgtdtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// The child process's settings, passed in its environment.
const (
	envChild  = "SHOAL_FENCE_CHILD" // "pr" or "lease"
	envLegs   = "SHOAL_FENCE_LEGS"  // comma-separated iSCSI URLs or file paths
	envName   = "SHOAL_FENCE_NAME"
	envInc    = "SHOAL_FENCE_INC"
	envEtcd   = "SHOAL_FENCE_ETCD" // comma-separated endpoints
	envTTL    = "SHOAL_FENCE_TTL"  // lease TTL in seconds
	envMargin = "SHOAL_FENCE_MARGIN"
	envPause  = "SHOAL_FENCE_PAUSE_AT" // write number after which the child stops itself
	envPrefix = "SHOAL_FENCE_PREFIX"   // etcd key prefix of a coordinator child
	envLog    = "SHOAL_FENCE_EFFECTS"  // file a coordinator child appends its effects to
	envHold   = "SHOAL_FENCE_HOLD"     // step at which a coordinator child blocks
)

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "pr":
		os.Exit(childPR())
	case "lease":
		os.Exit(childLease())
	case "coord":
		os.Exit(childCoordinator())
	}
	os.Exit(m.Run())
}

// Every child loop is bounded in count and time.
const (
	childMaxWrites = 20000
	childMaxTime   = 60 * time.Second
)

// childPR is a node on tgtd legs: it registers its key, then writes the
// same block to every leg over and over, reporting each result, until
// every leg answers reservation conflict.
func childPR() int {
	ctx, cancel := context.WithTimeout(context.Background(), childMaxTime)
	defer cancel()
	ref := fencing.NewNodeRef(os.Getenv(envName), os.Getenv(envInc), 0)
	var legs []fencing.Leg
	var devs []blockdev.Device
	for i, u := range strings.Split(os.Getenv(envLegs), ",") {
		cfg, err := iscsi.ConfigFromURL(u)
		if err != nil {
			fmt.Println("error", err)
			return 2
		}
		cfg.InitiatorName = "iqn.2026-01.io.shoal:" + ref.Name + "-" + ref.Incarnation
		d, err := iscsi.Open(ctx, cfg)
		if err != nil {
			fmt.Println("error", err)
			return 2
		}
		defer d.Close()
		devs = append(devs, d)
		legs = append(legs, fencing.Leg{Name: fmt.Sprintf("leg%d", i), Dev: d})
	}
	f, err := fencing.NewReservationFencer(fencing.ReservationConfig{Self: ref, Legs: func() []fencing.Leg { return legs }})
	if err == nil {
		err = f.Join(ctx)
	}
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	fmt.Println("ready")
	return writeLoop(ctx, devs, func(err error) bool { return errors.Is(err, blockdev.ErrReservationConflict) }, "fenced")
}

// childLease is a node on file legs in lease-only mode: it keeps an etcd
// lease alive, writes through a Guard on its self-fence deadline, and
// stops itself (SIGSTOP) after a given write, between two writes.
func childLease() int {
	ctx, cancel := context.WithTimeout(context.Background(), childMaxTime)
	defer cancel()
	ttl, _ := strconv.Atoi(os.Getenv(envTTL))
	margin, _ := time.ParseDuration(os.Getenv(envMargin))
	pauseAt, _ := strconv.Atoi(os.Getenv(envPause))
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(os.Getenv(envEtcd), ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	defer cli.Close()
	var deadline atomic.Int64
	sent := time.Now()
	g, err := cli.Grant(ctx, int64(ttl))
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	deadline.Store(sent.Add(time.Duration(g.TTL)*time.Second - margin).UnixNano())
	go func() {
		t := time.NewTicker(time.Duration(ttl) * time.Second / 4)
		defer t.Stop()
		for ctx.Err() == nil {
			<-t.C
			sent := time.Now()
			resp, err := cli.KeepAliveOnce(ctx, g.ID)
			if err == nil && resp.TTL > 0 {
				deadline.Store(sent.Add(time.Duration(resp.TTL)*time.Second - margin).UnixNano())
			}
		}
	}()
	guard := fencing.NewGuard(func() time.Time { return time.Unix(0, deadline.Load()) }, nil)
	var devs []blockdev.Device
	for _, p := range strings.Split(os.Getenv(envLegs), ",") {
		d, err := blockdev.Open(ctx, p, blockdev.OpenOptions{})
		if err != nil {
			fmt.Println("error", err)
			return 2
		}
		defer d.Close()
		devs = append(devs, guard.Wrap(d))
	}
	fmt.Printf("ready lease=%d\n", int64(g.ID))
	return writeLoop(ctx, devs, func(err error) bool { return errors.Is(err, fencing.ErrSelfFenced) }, "self-fenced", func(i int) {
		if i == pauseAt {
			fmt.Println("pausing")
			syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		}
	})
}

// writeLoop writes a block of 'w' at offset 0 of every device, reporting
// "write N ok" or "write N refused" per round, until every device refuses
// (fenced reports true), then prints done.
func writeLoop(ctx context.Context, devs []blockdev.Device, fenced func(error) bool, done string, between ...func(int)) int {
	p := block('w')
	for i := 0; i < childMaxWrites && ctx.Err() == nil; i++ {
		refused := 0
		for _, d := range devs {
			err := d.WriteAt(ctx, p, 0)
			switch {
			case err == nil:
			case fenced(err):
				refused++
			default:
				fmt.Println("error", err)
				return 3
			}
		}
		if refused == 0 {
			fmt.Printf("write %d ok\n", i)
		} else {
			fmt.Printf("write %d refused on %d legs\n", i, refused)
		}
		if refused == len(devs) {
			fmt.Println(done)
			return 0
		}
		for _, f := range between {
			f(i)
		}
		time.Sleep(2 * time.Millisecond)
	}
	fmt.Println("gave up")
	return 1
}

// Helpers for the parent side.

func childEnv(kv ...string) []string {
	env := append([]string(nil), os.Environ()...)
	for i := 0; i+1 < len(kv); i += 2 {
		env = append(env, kv[i]+"="+kv[i+1])
	}
	return env
}

// processState is the state letter of pid in /proc ("T" when stopped).
func processState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// effectHooks append each step's effect to a file shared by every
// coordinator, so a test sees which effects happened, in order, across
// processes. The step named hold blocks instead, until the process dies.
type effectHooks struct {
	path string
	hold string
	who  string
}

func (h effectHooks) effect(ctx context.Context, step string, v fencing.NodeRef) error {
	if step == h.hold {
		fmt.Println("holding", step)
		<-ctx.Done()
		return ctx.Err()
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s %s %s\n", step, v.Name, h.who); err != nil {
		return err
	}
	return f.Sync()
}

func (h effectHooks) Fence(ctx context.Context, v fencing.NodeRef) error {
	return h.effect(ctx, "fence", v)
}
func (h effectHooks) ReplayJournal(ctx context.Context, v fencing.NodeRef) error {
	return h.effect(ctx, "replay-journal", v)
}
func (h effectHooks) ResyncBitmap(ctx context.Context, v fencing.NodeRef) error {
	return h.effect(ctx, "resync", v)
}
func (h effectHooks) ReleaseLocks(ctx context.Context, v fencing.NodeRef) error {
	return h.effect(ctx, "release-locks", v)
}

// childCoordinator runs a recovery coordinator whose hooks log their
// effects to a file and block at one step.
func childCoordinator() int {
	ctx, cancel := context.WithTimeout(context.Background(), childMaxTime)
	defer cancel()
	name := os.Getenv(envName)
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(os.Getenv(envEtcd), ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	defer cli.Close()
	ttl, _ := strconv.Atoi(os.Getenv(envTTL))
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	hooks := effectHooks{path: os.Getenv(envLog), hold: os.Getenv(envHold), who: name}
	cfg := recovery.DefaultConfig()
	cfg.Name = name
	cfg.Fencer = hooks
	cfg.Hooks = hooks
	coord, err := recovery.NewCoordinator(recovery.CoordinatorConfig{
		Client: cli, Lease: recovery.SessionLease(sess), Prefix: os.Getenv(envPrefix), Self: fencing.NodeRef{Name: name, Incarnation: "1"}, Engine: cfg,
	})
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	go func() {
		for ctx.Err() == nil && !coord.Leading() {
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("elected")
	}()
	err = coord.Run(ctx)
	fmt.Println("ended", err)
	return 0
}
