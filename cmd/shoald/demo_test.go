package main

import (
	"bufio"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/nodetest"
)

// demoRun turns on TestDemoBringsBackAStoppedNode: about 40 s on the
// demo's fixed addresses, so not in the default run (make test-demo).
var demoRun = flag.Bool("shoald.demo", false, "run fixtures/demo.sh end to end (make test-demo)")

// demoOutput collects the foreground demo's output as it comes.
type demoOutput struct {
	mu    sync.Mutex
	lines []string
}

func (o *demoOutput) has(s string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range o.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func (o *demoOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n")
}

// TestDemoBringsBackAStoppedNode runs fixtures/demo.sh as a person does:
// the foreground demo prints node down, each recovery step and node up as
// they happen; after kill -9 of node3, "demo.sh start --detach" starts only
// node3; "demo.sh restart node2" restarts node2; Ctrl-C stops every node.
func TestDemoBringsBackAStoppedNode(t *testing.T) {
	skipShort(t)
	if !*demoRun {
		t.Skip("runs the demo on its fixed addresses for about 40 s; make test-demo (-args -shoald.demo) runs it")
	}
	for _, a := range []string{"127.0.0.1:7080", "127.0.0.2:7080", "127.0.0.3:7080", "127.0.0.1:2379"} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Skipf("the demo's address %s is taken (a demo runs?): %v", a, err)
		}
		l.Close()
	}
	bin := filepath.Dir(nodetest.Binary(t, "shoald"))
	nodetest.Binary(t, "shoalblk")
	script, err := filepath.Abs("../../fixtures/demo.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := append(os.Environ(), "SHOAL_BIN="+bin, "SHOAL_DEMO_DIR="+dir)
	demo := func(args ...string) (string, error) {
		cmd := exec.Command(script, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		t.Logf("demo.sh %s\n%s", strings.Join(args, " "), out)
		return string(out), err
	}
	t.Cleanup(func() { demo("stop") })

	fg := exec.Command(script, "start")
	fg.Env = env
	pipe, err := fg.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	fg.Stderr = fg.Stdout
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	out := &demoOutput{}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			out.mu.Lock()
			out.lines = append(out.lines, sc.Text())
			out.mu.Unlock()
		}
	}()
	fgDone := make(chan error, 1)
	go func() {
		<-readDone
		fgDone <- fg.Wait()
	}()
	defer func() { t.Logf("foreground demo:\n%s", out) }()
	waitFor := func(d time.Duration, what ...string) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			all := true
			for _, w := range what {
				all = all && out.has(w)
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the foreground demo did not print %q within %v", what, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor(60*time.Second, "Events as they happen", "watching the cluster through")

	pidOf := func(n string) int {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, n+".pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	old3 := pidOf("node3")
	if err := syscall.Kill(old3, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(30*time.Second, "node3 down", "fence done", "release-locks done", ": done in")
	o, err := demo("start", "--detach")
	if err != nil || !strings.Contains(o, "node1 already runs") || !strings.Contains(o, "started node3") {
		t.Fatalf("demo.sh start with node3 stopped: %v", err)
	}
	waitFor(30*time.Second, "node3 up")
	if out.has("Killed") {
		t.Error("the foreground demo printed bash's job notice for the killed node")
	}
	old2 := pidOf("node2")
	if o, err := demo("restart", "node2"); err != nil || !strings.Contains(o, "node2 is back") {
		t.Fatalf("demo.sh restart node2: %v", err)
	}
	if pidOf("node2") == old2 {
		t.Fatal("restart left node2's old process")
	}
	waitFor(30*time.Second, "node2 left", "node2 up")
	fg.Process.Signal(syscall.SIGINT)
	select {
	case <-fgDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the foreground demo did not stop on Ctrl-C")
	}
	for _, n := range []string{"node1", "node2", "node3"} {
		if _, err := os.Stat(filepath.Join(dir, n+".pid")); !os.IsNotExist(err) {
			t.Errorf("%s still has a pid file after Ctrl-C", n)
		}
	}
}
