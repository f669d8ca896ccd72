package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testBin is where TestMain builds shoalblk once for every test of the
// package (building it costs seconds, running it milliseconds). It is
// built without the race detector: a race-built process takes about a
// second to start on a loaded machine, and these tests start dozens.
var testBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TestMain gives the tests a directory for the one shoalblk build. The
// tests run in parallel: each has its own legs, etcd and tgtd, and most of
// their time goes to waits (a resync's settle time, rate-limited copies),
// so unless -test.parallel is given they all run at once, not GOMAXPROCS
// at a time.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		if err := flag.Set("test.parallel", "16"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "shoalblk-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBin.dir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildShoalblk returns the path of this command built from the package
// under test, building it on the first call.
func buildShoalblk(t *testing.T) string {
	t.Helper()
	testBin.once.Do(func() {
		bin := filepath.Join(testBin.dir, "shoalblk")
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			testBin.err = fmt.Errorf("build: %v\n%s", err, out)
			return
		}
		testBin.path = bin
	})
	if testBin.err != nil {
		t.Fatal(testBin.err)
	}
	return testBin.path
}

func run(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.CombinedOutput()
	t.Logf("shoalblk %s\n%s", strings.Join(args, " "), out)
	return string(out), err
}

// runStdout runs shoalblk and returns its standard output only.
func runStdout(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("shoalblk %s\n%s%s", strings.Join(args, " "), out, stderr.String())
	return string(out), err
}

// TestMultiProcess: three processes, each a node slot, write private and
// shared ranges of one volume over file legs under cross-process region
// locks; one is killed mid-run and its slot recovered. Then shoalblk check
// is clean, every block is whole and every acknowledged private write of
// the survivors is there.
func TestMultiProcess(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	legs := []string{filepath.Join(dir, "leg0.img"), filepath.Join(dir, "leg1.img")}
	locks := filepath.Join(dir, "locks")
	if _, err := run(t, bin, append([]string{"format", "--size", "8M", "--region-size", "64K", "--slots", "4"}, legs...)...); err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	const per = 400 // private blocks per process
	shared := fmt.Sprintf("%d,%d", 3*per, 3*per+200)
	var procs []*exec.Cmd
	underway := make(chan struct{}, 3)
	for slot := 0; slot < 3; slot++ {
		args := []string{"stress", "--slot", fmt.Sprint(slot), "--lock-dir", locks, "--ops", "1000",
			"--seed", fmt.Sprint(seed + int64(slot)), "--private", fmt.Sprintf("%d,%d", slot*per, (slot+1)*per),
			"--shared", shared, "--record", filepath.Join(dir, fmt.Sprintf("rec%d.json", slot))}
		if slot == 2 {
			args[6] = "100000" // runs until killed
		}
		cmd := exec.Command(bin, append(args, legs...)...)
		cmd.Stdout = &lineSignal{w: os.Stderr, match: "writes done", c: underway}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	// Midway, an operator fails leg 1 while the writers run; they learn
	// it from the superblocks and go on degraded.
	for range procs {
		select {
		case <-underway:
		case <-time.After(60 * time.Second):
			for _, p := range procs {
				p.Process.Kill()
			}
			t.Fatal("the writers did not get under way")
		}
	}
	if _, err := run(t, bin, append([]string{"fail-leg", "--leg", "1", "--lock-dir", locks}, legs...)...); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for _, p := range procs[:2] {
		go func() { done <- p.Wait() }()
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
		case <-time.After(2 * time.Minute):
			for _, p := range procs {
				p.Process.Kill()
			}
			t.Fatal("writers did not finish")
		}
	}
	// Slot 2 dies hard while writing; the kernel drops its locks.
	if err := procs[2].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	procs[2].Wait()
	// Every writer is down now: recover all slots (the killed one's
	// torn writes, and the marks the others kept while leg 1 was out),
	// and bring leg 1 back: only the regions written while it was out
	// are copied.
	out, err := run(t, bin, append([]string{"resync", "--all-slots", "--lock-dir", locks}, legs...)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "leg 1 in sync: missed writes") {
		t.Fatalf("leg 1 was not resynced from its missed writes")
	}
	if _, err := run(t, bin, append([]string{"check"}, legs...)...); err != nil {
		t.Fatalf("check after the run: %v", err)
	}
	for slot := 0; slot < 2; slot++ {
		if _, err := run(t, bin, append([]string{"stress-verify", "--from", fmt.Sprint(slot * per), "--to", fmt.Sprint((slot + 1) * per),
			"--slot", fmt.Sprint(slot), "--record", filepath.Join(dir, fmt.Sprintf("rec%d.json", slot))}, legs...)...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := run(t, bin, append([]string{"stress-verify", "--from", "0", "--to", fmt.Sprint(3*per + 200)}, legs...)...); err != nil {
		t.Fatal(err)
	}
	out, err = runStdout(t, bin, append([]string{"status", "--json"}, legs...)...)
	if err != nil || !strings.Contains(out, `"dirty_regions": {}`) {
		t.Fatalf("dirty regions left after every slot closed or was recovered: %v", err)
	}
}

// lineSignal passes what a process prints on to w and sends on c once when
// a write contains match (the lines waited for are short and written whole).
type lineSignal struct {
	w     io.Writer
	match string
	c     chan<- struct{}
	once  sync.Once
}

func (l *lineSignal) Write(p []byte) (int, error) {
	if strings.Contains(string(p), l.match) {
		l.once.Do(func() { l.c <- struct{}{} })
	}
	return l.w.Write(p)
}
