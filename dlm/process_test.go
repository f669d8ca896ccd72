package dlm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/portres"
)

// proc is a node process started from this test binary (see TestMain).
type proc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	mu      sync.Mutex
	next    int
	pending map[string]chan string
	ready   chan string
	stderr  *lockedBuffer
	exited  chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProcs starts n node processes forming an n-member etcd cluster.
func startProcs(t *testing.T, n int) []*proc {
	t.Helper()
	var peers, clients, initial []string
	for i := range n {
		pp, cp := reservePort(t), reservePort(t)
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", pp))
		clients = append(clients, fmt.Sprintf("http://127.0.0.1:%d", cp))
		initial = append(initial, fmt.Sprintf("n%d=%s", i+1, peers[i]))
	}
	dir := t.TempDir()
	procs := make([]*proc, n)
	for i := range n {
		spec := testNodeSpec{Name: fmt.Sprintf("n%d", i+1), Dir: fmt.Sprintf("%s/n%d", dir, i+1), PeerURL: peers[i], ClientURL: clients[i],
			InitialCluster: strings.Join(initial, ","), Prefix: "/proc"}
		b, _ := json.Marshal(spec)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), testNodeEnv+"="+string(b))
		ready := make(chan string, 1)
		p := &proc{t: t, name: spec.Name, cmd: cmd, pending: map[string]chan string{"0": ready}, ready: ready, stderr: &lockedBuffer{}, exited: make(chan struct{})}
		cmd.Stderr = p.stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.stdin = stdin
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go p.readLoop(stdout)
		procs[i] = p
		t.Cleanup(func() {
			// Stop only the processes this test started, by their PID.
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
			<-p.exited
			if t.Failed() {
				t.Logf("%s stderr:\n%s", p.name, tail(p.stderr.String(), 3000))
			}
		})
	}
	for _, p := range procs {
		select {
		case r := <-p.ready:
			if !strings.HasPrefix(r, "ok ready") {
				t.Fatalf("%s: %s", p.name, r)
			}
		case <-p.exited:
			t.Fatalf("%s exited: %s", p.name, tail(p.stderr.String(), 3000))
		case <-time.After(60 * time.Second):
			t.Fatalf("%s not ready", p.name)
		}
	}
	return procs
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// reservePort reserves a loopback port until the test ends (portres: the
// node process binds it with SO_REUSEPORT; restarts find it kept).
func reservePort(t *testing.T) int {
	t.Helper()
	r, err := portres.Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Release)
	return r.Port()
}

func (p *proc) readLoop(r io.Reader) {
	defer close(p.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		id, rest, _ := strings.Cut(sc.Text(), " ")
		p.mu.Lock()
		ch := p.pending[id]
		delete(p.pending, id)
		p.mu.Unlock()
		if ch != nil {
			ch <- rest
		}
	}
	_ = p.cmd.Wait()
}

// send issues a command and returns the channel its reply arrives on.
func (p *proc) send(cmd string, args ...string) <-chan string {
	p.mu.Lock()
	p.next++
	id := strconv.Itoa(p.next)
	ch := make(chan string, 1)
	p.pending[id] = ch
	p.mu.Unlock()
	if _, err := fmt.Fprintf(p.stdin, "%s %s %s\n", id, cmd, strings.Join(args, " ")); err != nil {
		ch <- "err " + err.Error()
	}
	return ch
}

// wait waits for a reply and fails the test on an error reply.
func (p *proc) wait(ch <-chan string, what string) string {
	p.t.Helper()
	r, err := p.waitErr(ch, what)
	if err != nil {
		p.t.Fatal(err)
	}
	return r
}

func (p *proc) waitErr(ch <-chan string, what string) (string, error) {
	p.t.Helper()
	select {
	case r := <-ch:
		if s, ok := strings.CutPrefix(r, "ok"); ok {
			return strings.TrimSpace(s), nil
		}
		return "", fmt.Errorf("%s: %s: %s", p.name, what, r)
	case <-time.After(45 * time.Second):
		return "", fmt.Errorf("%s: %s: no reply in 45s", p.name, what)
	}
}

func (p *proc) call(cmd string, args ...string) string {
	p.t.Helper()
	return p.wait(p.send(cmd, args...), cmd+" "+strings.Join(args, " "))
}

func (p *proc) signal(s syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(s); err != nil {
		p.t.Fatal(err)
	}
}

func parseTok(t *testing.T, s string) Token {
	t.Helper()
	r, n, ok := strings.Cut(s, ".")
	rev, err1 := strconv.ParseInt(r, 10, 64)
	k, err2 := strconv.ParseUint(n, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("bad token %q", s)
	}
	return MakeToken(rev, uint16(k))
}

func medianMicros(t *testing.T, s string) int {
	t.Helper()
	f := strings.Fields(s)
	v, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("bad latency reply %q", s)
	}
	return v
}

// TestProcessCluster runs three node processes, each with an embedded etcd
// member and a DLM node, and injects SIGSTOP/SIGCONT and SIGKILL.
func TestProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three node processes")
	}
	ps := startProcs(t, 3)
	n1, n2, n3 := ps[0], ps[1], ps[2]
	tokens := map[string][]Token{}
	grant := func(res, tok string) {
		t.Helper()
		tk := parseTok(t, tok)
		if l := tokens[res]; len(l) > 0 && tk <= l[len(l)-1] {
			t.Fatalf("token %s of %s not above %s", tk, res, l[len(l)-1])
		}
		tokens[res] = append(tokens[res], tk)
	}

	// Cached re-acquire makes no etcd request.
	grant("foo", n1.call("acquire", "h1", "foo", "EX"))
	n1.call("release", "h1")
	if got := n1.call("reacquire", "foo", "2000"); got != "0" {
		t.Fatalf("cached re-acquire made %s etcd requests", got)
	}
	// Cross-node hand-over through the blocking callback.
	grant("foo", n2.call("acquire", "h2", "foo", "EX"))
	n2.call("release", "h2")
	base := medianMicros(t, n1.call("latency", "20"))

	// SIGSTOP a holder past its TTL.
	o3 := n3.call("owner")
	grant("bar", n3.call("acquire", "h3", "bar", "EX"))
	waitBar := n2.send("acquire", "h4", "bar", "EX")
	n3.call("stepdown")
	n3.signal(syscall.SIGSTOP)
	n1.call("waitdead", o3)
	during := medianMicros(t, n1.call("latency", "20"))
	grant("bar", n1.call("acquire", "r1", "bar", "EX", "recovery"))
	select {
	case r := <-waitBar:
		t.Fatalf("n2 granted bar before recovery released it: %s", r)
	default:
	}
	n1.call("releasedead", o3)
	n1.call("release", "r1")
	grant("bar", n2.wait(waitBar, "acquire bar"))
	n3.signal(syscall.SIGCONT)
	if _, err := n3.waitErr(n3.send("use", "h3"), "use after SIGCONT"); err == nil || !strings.Contains(err.Error(), "lease lost") {
		t.Fatalf("stopped holder could still use its lock: %v", err)
	}
	var audit Audit
	if err := json.Unmarshal([]byte(n3.call("audit")), &audit); err != nil {
		t.Fatal(err)
	}
	if audit.Uses == 0 || !audit.LastUse.Before(audit.DeadlineAtLastUse) || audit.FencedAt.IsZero() || audit.Refused == 0 {
		t.Fatalf("audit does not prove the lock was unused after the deadline: %+v", audit)
	}
	t.Logf("n3 audit: %d uses, last %v before its deadline, fenced at %v", audit.Uses, audit.DeadlineAtLastUse.Sub(audit.LastUse), audit.FencedAt)
	n2.call("release", "h4")
	t.Logf("unrelated grant latency: median %dµs before, %dµs during recovery", base, during)
	if during > 3*base+50_000 {
		t.Errorf("unrelated grants slowed down during recovery: median %dµs, %dµs before", during, base)
	}

	// SIGKILL a holder.
	o3b := n3.call("rejoin")
	grant("baz", n3.call("acquire", "h5", "baz", "EX"))
	waitBaz := n2.send("acquire", "h6", "baz", "PR")
	n3.call("stepdown")
	n3.signal(syscall.SIGKILL)
	n1.call("waitdead", o3b)
	during = medianMicros(t, n1.call("latency", "20"))
	t.Logf("unrelated grant latency after SIGKILL: median %dµs", during)
	if during > 3*base+50_000 {
		t.Errorf("unrelated grants slowed down during recovery: median %dµs, %dµs before", during, base)
	}
	grant("baz", n1.call("acquire", "r2", "baz", "EX", "recovery"))
	select {
	case r := <-waitBaz:
		t.Fatalf("n2 granted baz before recovery released it: %s", r)
	default:
	}
	n1.call("releasedead", o3b)
	select {
	case r := <-waitBaz:
		t.Fatalf("n2 granted baz while the coordinator holds it: %s", r)
	default:
	}
	n1.call("release", "r2")
	grant("baz", n2.wait(waitBaz, "acquire baz"))
	n2.call("release", "h6")
	grant("foo", n1.call("acquire", "h7", "foo", "EX"))
	n1.call("release", "h7")
	n1.call("check")
	n2.call("check")
	t.Logf("tokens: %v", tokens)
}
