package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// interrupt starts shoalblk, waits (at most 30 s) until its stderr prints a
// line containing when, sends SIGINT as Ctrl-C does and returns everything
// it printed and its error.
func interrupt(t *testing.T, bin, when string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{})
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pipe)
		signalled := false
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if !signalled && strings.Contains(sc.Text(), when) {
				signalled = true
				close(seen)
			}
		}
	}()
	select {
	case <-seen:
		cmd.Process.Signal(syscall.SIGINT)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		cmd.Wait()
		t.Fatalf("shoalblk %v never printed %q:\n%s", args, when, strings.Join(lines, "\n"))
	}
	<-done
	err = cmd.Wait()
	out := stdout.String() + strings.Join(lines, "\n")
	t.Logf("shoalblk %s (interrupted)\n%s", strings.Join(args, " "), out)
	return out, err
}

// TestInterruptedCommandsResume: an add-leg and a scrub stopped with
// Ctrl-C in the middle of copying finish when run again as they say.
func TestInterruptedCommandsResume(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	if _, err := run(t, bin, "format", "--size", "4M", "--region-size", "64K", p("a.img"), p("b.img")); err != nil {
		t.Fatal(err)
	}
	addLeg := []string{"add-leg", "--rate", "1M", "--leg", p("c.img"), p("a.img"), p("b.img")}
	if _, err := interrupt(t, bin, "resync leg 2", addLeg...); err == nil {
		t.Fatal("interrupted add-leg reported success")
	}
	addLeg = append(addLeg[:1], addLeg[3:]...) // full speed now
	out, err := run(t, bin, addLeg...)
	if err != nil || !strings.Contains(out, "resuming") || !strings.Contains(out, "in sync") {
		t.Fatalf("add-leg run again: %v\n%s", err, out)
	}
	if _, err := run(t, bin, "check", p("a.img"), p("b.img"), p("c.img")); err != nil {
		t.Fatalf("check after the resumed add-leg: %v", err)
	}
	if out, err := run(t, bin, addLeg...); err != nil || !strings.Contains(out, "already in the volume and in sync") {
		t.Fatalf("add-leg of a leg in sync: %v\n%s", err, out)
	}

	out, err = interrupt(t, bin, "scrub", "scrub", "--rate", "2M", "--repair", p("a.img"), p("b.img"), p("c.img"))
	i := strings.Index(out, "resume with: ")
	if err == nil || i < 0 {
		t.Fatalf("interrupted scrub does not say how to resume (err %v)", err)
	}
	resume := strings.TrimSpace(strings.SplitN(out[i+len("resume with: "):], "\n", 2)[0])
	if !strings.HasPrefix(resume, "shoalblk scrub ") || !strings.Contains(resume, "--from ") || !strings.Contains(resume, "--repair") {
		t.Fatalf("resume command %q", resume)
	}
	sh := exec.Command("sh", "-c", bin+strings.TrimPrefix(resume, "shoalblk"))
	got, err := sh.CombinedOutput()
	t.Logf("%s\n%s", resume, got)
	if err != nil || !strings.Contains(string(got), "scrubbed") {
		t.Fatalf("resume command failed: %v", err)
	}
}

// TestFormatRefusesOpenVolume: format --force over the legs of a volume a
// node has open is refused and names the flag that overrides it; once the
// node closes the volume, --force is enough. format without --force names
// --force.
func TestFormatRefusesOpenVolume(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	legs := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	if _, err := run(t, bin, append([]string{"format", "--size", "4M", "--region-size", "64K"}, legs...)...); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, bin, append([]string{"format"}, legs...)...)
	if err == nil || !strings.Contains(out, "give --force to overwrite") {
		t.Fatalf("format over a volume without --force: %v", err)
	}
	// A node: the volume open in slot 3.
	ctx := context.Background()
	cfg := mirror.FastConfig(3)
	for _, l := range legs {
		d, err := blockdev.Open(ctx, l, blockdev.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Legs = append(cfg.Legs, d)
	}
	v, err := mirror.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	before := legSums(t, dir)
	out, err = run(t, bin, append([]string{"format", "--force"}, legs...)...)
	if err == nil || !strings.Contains(out, "open in node slots [3]") || !strings.Contains(out, "--force-while-open") {
		t.Fatalf("format --force over an open volume: %v", err)
	}
	sameSums(t, "a refused format", before, legSums(t, dir))
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, bin, append([]string{"format", "--force"}, legs...)...); err != nil {
		t.Fatalf("format --force after the node closed the volume: %v", err)
	}
	if _, err := os.Stat(legs[0]); err != nil {
		t.Fatal(err)
	}
}
