package killtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/store"
)

// The helper process's role and settings come in its environment.
const (
	envRole    = "SHOAL_KILLTEST_ROLE" // "writer" or "coordinator"
	envDir     = "SHOAL_KILLTEST_DIR"
	envEtcd    = "SHOAL_KILLTEST_ETCD"
	envName    = "SHOAL_KILLTEST_NAME"
	envSlot    = "SHOAL_KILLTEST_SLOT"
	envAckLag  = "SHOAL_KILLTEST_ACK_LAG" // writer: record k is acknowledged in transaction k+lag
	envKillAt  = "SHOAL_KILLTEST_KILL_AT" // coordinator: SIGKILL itself in the handler of this many-th record
	intentKind = "intent"
)

// TestHelperProcess is the body of the node processes the tests start; it
// does nothing in a normal test run.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(envRole)
	if role == "" {
		t.Skip("runs only as a helper process")
	}
	if err := helper(role); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helper(role string) error {
	ctx := context.Background()
	slot, err := strconv.Atoi(os.Getenv(envSlot))
	if err != nil {
		return err
	}
	name := os.Getenv(envName)
	log := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: os.Stderr})
	n, err := startNode(ctx, strings.Split(os.Getenv(envEtcd), ","), os.Getenv(envDir), name, slot, log)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	switch role {
	case "writer":
		if err := n.openStore(ctx, log, nil); err != nil {
			return err
		}
		lag, _ := strconv.Atoi(os.Getenv(envAckLag))
		dir := "w/" + name
		if err := n.st.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		say("owner %s %s %d", n.member.Owner().Node, n.member.Owner().Incarnation, n.member.LeaseID())
		var ids []uint64
		deadline := time.Now().Add(time.Minute)
		for k := 0; k < 100000 && time.Now().Before(deadline); k++ {
			var id uint64
			err := n.st.Update(ctx, func(tx *store.Tx) error {
				var err error
				if id, err = tx.Log(intentKind, []byte(strconv.Itoa(k))); err != nil {
					return err
				}
				if k >= lag && lag >= 0 {
					tx.Ack(ids[k-lag])
				}
				return tx.WriteFile(fmt.Sprintf("%s/f%05d", dir, k), fileContent(k), 0o644)
			})
			if err != nil {
				return err
			}
			ids = append(ids, id)
			say("ack %d", k)
		}
		return fmt.Errorf("writer was not killed")
	case "coordinator":
		killAt, _ := strconv.Atoi(os.Getenv(envKillAt))
		// A handler may run more than once for one record (its
		// transaction starts over): distinct records count.
		seen := map[string]bool{}
		h := func(ctx context.Context, tx *store.Tx, rec store.Record) error {
			seen[string(rec.Payload)] = true
			if len(seen) == killAt {
				// Killed in the middle of the replay, inside the
				// transaction that would hand this record over.
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
			return handle(name)(ctx, tx, rec)
		}
		// One record to a transaction: the kill inside the second
		// record's transaction comes after the first was handed over.
		if err := n.openStore(ctx, log, nil, func(c *store.Config) { c.ReplayBatch = 1 }); err != nil {
			return err
		}
		n.st.Handle(intentKind, h)
		say("owner %s %s %d", n.member.Owner().Node, n.member.Owner().Incarnation, n.member.LeaseID())
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			var node, inc string
			var dead int
			if _, err := fmt.Sscanf(in.Text(), "recover %s %s %d", &node, &inc, &dead); err != nil {
				return err
			}
			if _, err := n.recover(ctx, dlm.Owner{Node: node, Incarnation: inc}, dead); err != nil {
				return err
			}
			say("recovered")
		}
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

func fileContent(k int) []byte {
	return []byte(fmt.Sprintf("file %d %s", k, strings.Repeat("x", k%3*3000)))
}

// handle is the application's recovery of an intent record: it writes
// handled/ID naming who handled it; a record handed over twice leaves
// dups/ID.
func handle(who string) store.Handler {
	return func(ctx context.Context, tx *store.Tx, rec store.Record) error {
		key := string(rec.Payload)
		if _, err := tx.ReadFile("handled/" + key); err == nil {
			return tx.WriteFile("dups/"+key, []byte(who), 0o644)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return tx.WriteFile("handled/"+key, []byte(who), 0o644)
	}
}

// proc is a helper process.
type proc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	owner dlm.Owner
	lease clientv3.LeaseID
}

func startProc(t *testing.T, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = testlogWriter{t}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, in: in, lines: make(chan string, 1000)}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	line := p.next(t, 60*time.Second)
	if _, err := fmt.Sscanf(line, "owner %s %s %d", &p.owner.Node, &p.owner.Incarnation, &p.lease); err != nil {
		t.Fatalf("helper said %q first: %v", line, err)
	}
	return p
}

// next is the helper's next line of output, within d.
func (p *proc) next(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatal("helper process ended")
		}
		return l
	case <-time.After(d):
		t.Fatalf("helper process silent for %v", d)
	}
	return ""
}

type testlogWriter struct{ t *testing.T }

func (w testlogWriter) Write(b []byte) (int, error) {
	w.t.Logf("helper: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// cluster is a test's etcd, volume and store, with the surviving node in
// slot 0.
type cluster struct {
	dir  string
	etcd *etcdtest.Cluster
	s    *node
	env  []string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	ctx := context.Background()
	c := &cluster{dir: t.TempDir(), etcd: etcdtest.NewCluster(t, 1)}
	if err := formatVolume(ctx, c.dir); err != nil {
		t.Fatal(err)
	}
	log := testlog.New(t, "survivor")
	s, err := startNode(ctx, c.etcd.Endpoints, c.dir, "survivor", 0, log)
	if err != nil {
		t.Fatal(err)
	}
	c.s = s
	t.Cleanup(func() { s.close(context.Background()) })
	if _, err := store.Format(ctx, s.vol, store.FormatOptions{Slots: slots}); err != nil {
		t.Fatal(err)
	}
	if err := s.openStore(ctx, log, nil); err != nil {
		t.Fatal(err)
	}
	s.st.Handle(intentKind, handle("survivor"))
	for _, d := range []string{"w", "handled", "dups"} {
		if err := s.st.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c.env = []string{envDir + "=" + c.dir, envEtcd + "=" + strings.Join(c.etcd.Endpoints, ",")}
	return c
}

// kill SIGKILLs p and, once it is gone, revokes its lease (what the
// cluster's failure detection does, without waiting for the lease's TTL).
func (c *cluster) kill(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	c.expire(t, p)
}

// expire revokes the lease of a process that is gone.
func (c *cluster) expire(t *testing.T, p *proc) {
	t.Helper()
	if _, err := c.s.cli.Revoke(context.Background(), p.lease); err != nil {
		t.Fatalf("revoke the lease of %s: %v", p.owner, err)
	}
}

// runWriter starts a writer in slot and kills it (SIGKILL) after acks
// acknowledged transactions, mid-way through its next ones; it returns the
// writer and the acknowledged transactions.
func (c *cluster) runWriter(t *testing.T, name string, slot, lag, acks int) (*proc, int) {
	t.Helper()
	w := startProc(t, append(c.env, envRole+"=writer", envName+"="+name, envSlot+"="+strconv.Itoa(slot), envAckLag+"="+strconv.Itoa(lag))...)
	last := -1
	for last < acks-1 {
		if _, err := fmt.Sscanf(w.next(t, 60*time.Second), "ack %d", &last); err != nil {
			t.Fatal(err)
		}
	}
	c.kill(t, w)
	// Acknowledgements printed before the kill took effect count too.
	for l := range w.lines {
		if _, err := fmt.Sscanf(l, "ack %d", &last); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("writer %s killed after %d acknowledged transactions", name, last+1)
	return w, last + 1
}

// checkAfter checks, on the survivor, that every acknowledged file of the
// writer is there whole; that the records handed over are exactly those
// of the writer's committed transactions not acknowledged (lag of them,
// or fewer at the start), each once; and that the store checks clean.
func (c *cluster) checkAfter(t *testing.T, writer string, acked, lag int) map[string]string {
	t.Helper()
	st := c.s.st
	ents, err := st.ReadDir("w/" + writer)
	if err != nil {
		t.Fatal(err)
	}
	committed := len(ents) // transactions k = 0..committed-1 committed
	if committed < acked {
		t.Fatalf("%d files of %d acknowledged transactions", committed, acked)
	}
	for k := 0; k < committed; k++ {
		b, err := st.ReadFile(fmt.Sprintf("w/%s/f%05d", writer, k))
		if err != nil || string(b) != string(fileContent(k)) {
			t.Fatalf("file %d after recovery: %d bytes (%v)", k, len(b), err)
		}
	}
	handled := map[string]string{}
	hs, err := st.ReadDir("handled")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hs {
		b, err := st.ReadFile("handled/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		handled[e.Name()] = string(b)
	}
	want := map[string]bool{}
	for k := max(0, committed-lag); k < committed; k++ {
		want[strconv.Itoa(k)] = true
	}
	if len(handled) != len(want) {
		t.Fatalf("records handed over: %v; want those of transactions %v", handled, want)
	}
	for k := range handled {
		if !want[k] {
			t.Fatalf("record %s handed over though it was acknowledged (handled: %v)", k, handled)
		}
	}
	if dups, err := st.ReadDir("dups"); err != nil || len(dups) != 0 {
		t.Fatalf("records handed over twice: %v (%v)", dups, err)
	}
	rep, err := st.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	return handled
}

// TestWriterKilledMidTransaction: a node process writing transactions (a
// file and an application record each) as fast as it can is SIGKILLed;
// the survivor recovers it (volume slot, journal replay, the records not
// yet acknowledged handed to the handler once, lock release): every
// acknowledged transaction is there and the check is clean.
//
// It met a stall in about 3 of 20 runs: the replay's record handler asked
// for the root directory's lock as a recovery request and its node never
// sent the request (a try request refused before its creation was
// answered left the node-level lock wanting a former grant's mode, which
// "covered" the next waiter; fixed in the lock manager).
func TestWriterKilledMidTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	c := newCluster(t)
	const lag = 3
	w, acked := c.runWriter(t, "writer", 1, lag, 25)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs, err := c.s.recover(ctx, w.owner, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replay: %+v", rs)
	c.checkAfter(t, "writer", acked, lag)
}

// TestCoordinatorKilledDuringReplay: the writer is SIGKILLed, the node
// process that recovers it is SIGKILLed in turn while handing the writer's
// records over (inside the transaction of the second one); the last node
// recovers both. Every acknowledged transaction is there, every record
// not acknowledged is handled exactly once (some by the first coordinator,
// the rest by the second), and the check is clean.
func TestCoordinatorKilledDuringReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	c := newCluster(t)
	const lag = 5
	coord := startProc(t, append(c.env, envRole+"=coordinator", envName+"=coordinator", envSlot+"=2", envKillAt+"=2")...)
	w, acked := c.runWriter(t, "writer", 1, lag, 25)
	if _, err := fmt.Fprintf(coord.in, "recover %s %s 1\n", w.owner.Node, w.owner.Incarnation); err != nil {
		t.Fatal(err)
	}
	if err := coord.cmd.Wait(); err == nil {
		t.Fatal("the coordinator finished its recovery instead of being killed in it")
	}
	c.expire(t, coord)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The coordinator's own journal first (its handled records and the
	// writer's cursor), then what is left of the writer's.
	if _, err := c.s.recover(ctx, coord.owner, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.s.recover(ctx, w.owner, 1); err != nil {
		t.Fatal(err)
	}
	handled := c.checkAfter(t, "writer", acked, lag)
	by := map[string]int{}
	for _, who := range handled {
		by[who]++
	}
	if by["coordinator"] != 1 || by["survivor"] != lag-1 {
		t.Fatalf("records handled by %v; want 1 by the killed coordinator, %d by the survivor", by, lag-1)
	}
}
