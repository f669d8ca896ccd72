package fencing_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
)

func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func agent(t *testing.T, cmd string, timeout time.Duration) *fencing.AgentFencer {
	t.Helper()
	cfg := fencing.DefaultAgentConfig(cmd)
	cfg.Timeout = timeout
	cfg.Options = map[string]string{"ipaddr": "127.0.0.1", "passwd": "secret"}
	cfg.Plugs = map[string]string{"node2": "outlet-7"}
	cfg.Logger = testlog.New(t, "agent")
	f, err := fencing.NewAgentFencer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAgentSucceedsWithFenceAgentStdin(t *testing.T) {
	dir := t.TempDir()
	got := filepath.Join(dir, "stdin")
	script := writeScript(t, "fence_ok", "cat > "+got+"\necho Success: Powered OFF\nexit 0\n")
	f := agent(t, script, 10*time.Second)
	if err := f.Fence(context.Background(), fencing.NewNodeRef("node2", "i1", 0)); err != nil {
		t.Fatalf("fence: %v", err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	want := "action=off\nnodename=node2\nplug=outlet-7\nport=outlet-7\nipaddr=127.0.0.1\npasswd=secret\n"
	if string(b) != want {
		t.Fatalf("agent stdin:\n%s\nwant:\n%s", b, want)
	}
}

func TestAgentFailureIsReported(t *testing.T) {
	script := writeScript(t, "fence_fail", "echo 'Failed: Unable to connect' >&2\nexit 1\n")
	f := agent(t, script, 10*time.Second)
	err := f.Fence(context.Background(), fencing.NewNodeRef("node3", "i1", 0))
	if !errors.Is(err, fencing.ErrFenceFailed) || errors.Is(err, fencing.ErrAgentTimeout) {
		t.Fatalf("failing agent = %v, want ErrFenceFailed", err)
	}
	if !strings.Contains(err.Error(), "exit code 1") {
		t.Fatalf("error %q does not give the exit code", err)
	}
}

func TestAgentHangingIsKilledWithItsChildren(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := writeScript(t, "fence_hang", "sleep 120 &\necho $! > "+pidFile+"\nwait\n")
	f := agent(t, script, 300*time.Millisecond)
	start := time.Now()
	err := f.Fence(context.Background(), fencing.NewNodeRef("node3", "i1", 0))
	if !errors.Is(err, fencing.ErrAgentTimeout) || !errors.Is(err, fencing.ErrFenceFailed) {
		t.Fatalf("hanging agent = %v, want ErrAgentTimeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("hanging agent took %v to give up", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("the agent's child %d to end after the timeout", pid), func() bool { return !processAlive(pid) })
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestAgentConfigValidate(t *testing.T) {
	cfg := fencing.DefaultAgentConfig("")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Command") {
		t.Fatalf("empty command: %v", err)
	}
	cfg = fencing.DefaultAgentConfig("/bin/true")
	cfg.Action = "on"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Action") {
		t.Fatalf("action on: %v", err)
	}
	cfg = fencing.DefaultAgentConfig("/bin/true")
	cfg.Options = map[string]string{"a": "b\nc"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Options") {
		t.Fatalf("newline in option: %v", err)
	}
}

// TestAgentEndedByItsCallerIsNoAgentTimeout: an agent killed because its
// caller's context ended is not reported as the agent timing out.
func TestAgentEndedByItsCallerIsNoAgentTimeout(t *testing.T) {
	script := writeScript(t, "fence_slow", "sleep 120 &\nwait\n")
	f := agent(t, script, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := f.Fence(ctx, fencing.NewNodeRef("node3", "i1", 0))
	if err == nil || errors.Is(err, fencing.ErrAgentTimeout) {
		t.Fatalf("agent ended by its caller's deadline = %v, want a failure that is not ErrAgentTimeout", err)
	}
}
