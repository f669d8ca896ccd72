package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// syncBuffer is a bytes.Buffer that a process writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReloaderAppliesLiveFieldsOnly drives the reloader without a process.
func TestReloaderAppliesLiveFieldsOnly(t *testing.T) {
	var out syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info, DisableTime: true})
	running := cluster.DefaultConfig()
	running.NodeName, running.DataDir = "n1", "/d"
	next, err := running, error(nil)
	r := &reloader{running: running, log: log, load: func() (cluster.Config, error) { return next, err }}

	next.LogLevel, next.Lease.TTL = "debug", 30*time.Second
	r.reload()
	if !strings.Contains(out.String(), "configuration reloaded: applied=log_level need_restart=lease.ttl") {
		t.Fatalf("log:\n%s", out.String())
	}
	if !log.IsDebug() {
		t.Fatal("log level not applied")
	}
	// The field that needs a restart is still named at the next reload:
	// the running node still has the old value.
	r.reload()
	if n := strings.Count(out.String(), "need_restart=lease.ttl"); n != 2 {
		t.Fatalf("restart field named %d times:\n%s", n, out.String())
	}
	err = fmt.Errorf("config: bad log_level")
	r.reload()
	if !strings.Contains(out.String(), "configuration reload refused; the running configuration stays") || !log.IsDebug() {
		t.Fatalf("a bad file changed something:\n%s", out.String())
	}
}

// TestSIGHUPReloadsConfiguration runs shoald from a file, changes the file
// and sends SIGHUP: the log level changes at once, a lease change is named
// as needing a restart, a broken file is refused, and the node keeps
// serving throughout. On the way the tools reach the HTTPS admin API with
// the file's credentials, none, and a read-only certificate from
// shoald cert (refused a leave with 403).
func TestSIGHUPReloadsConfiguration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	admin, client, peer := nodetest.ReservePort(t), nodetest.ReservePort(t), nodetest.ReservePort(t)
	conf := filepath.Join(dir, "node.hcl")
	write := func(logLevel, extra string) {
		t.Helper()
		body := fmt.Sprintf(`node_name = "solo"
data_dir = %q
profile = "fast"
log_level = %q
reuse_port = true
etcd {
  client_addr = %q
  peer_addr = %q
}
admin {
  addr = %q
}
%s
`, filepath.Join(dir, "data"), logLevel, client, peer, admin, extra)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("info", "")
	var out syncBuffer
	cmd := exec.Command(nodetest.Binary(t, "shoald"), "run", "--config", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("shoald log:\n%s", out.String())
		}
	})
	// /readyz needs no credentials; the node's certificate comes from the
	// local CA it creates in its data directory.
	var hc *http.Client
	ready := func() bool {
		if hc == nil {
			tlsCfg, err := cluster.ClientTLS(cluster.CertFiles{CA: filepath.Join(dir, "data", "pki", "ca.pem")})
			if err != nil {
				return false
			}
			hc = &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		}
		resp, err := hc.Get("https://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	testutil.WaitFor(t, 30*time.Second, "the node ready", ready)
	// The tools find the admin API and its credentials (the node's own
	// certificate from the local CA) in the same file.
	if out, err := runShoald(t, "status", "--config", conf); err != nil || !strings.Contains(out, "solo") {
		t.Fatalf("shoald status --config: %v\n%s", err, out)
	}
	if out, err := runShoald(t, "status", "--admin", admin); err == nil || !strings.Contains(out, "--config") {
		t.Fatalf("shoald status without credentials: %v\n%s", err, out)
	}
	// A read-only certificate reads and is refused a leave; the leave
	// itself is the admin's (not tried here: it would end the test).
	certs := filepath.Join(dir, "certs")
	if out, err := runShoald(t, "cert", "--config", conf, "--name", "auditor", "--read-only", "--out", certs); err != nil || !strings.Contains(out, "read-only certificate") {
		t.Fatalf("shoald cert --read-only: %v\n%s", err, out)
	}
	ro := []string{"--admin", admin, "--cacert", filepath.Join(dir, "data", "pki", "ca.pem"), "--cert", filepath.Join(certs, "auditor.pem"), "--key", filepath.Join(certs, "auditor-key.pem")}
	if out, err := runShoald(t, append([]string{"status"}, ro...)...); err != nil || !strings.Contains(out, "solo") {
		t.Fatalf("read-only status: %v\n%s", err, out)
	}
	if out, err := runShoald(t, append([]string{"leave"}, ro...)...); err == nil || !strings.Contains(out, "403") || !strings.Contains(out, "needs the admin role") {
		t.Fatalf("read-only leave was not refused: %v\n%s", err, out)
	}

	write("debug", `lease {
  ttl = "3s"
}`)
	cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, "the reload logged", func() bool {
		return strings.Contains(out.String(), "configuration reloaded:")
	})
	line := lineWith(out.String(), "configuration reloaded:")
	for _, want := range []string{"applied=log_level", "need_restart=lease.ttl"} {
		if !strings.Contains(line, want) {
			t.Fatalf("reload line %q lacks %q", line, want)
		}
	}
	if !strings.Contains(out.String(), "[DEBUG] shoald: log level changed: node=solo from=info to=debug") {
		t.Fatal("no debug line after the level changed to debug")
	}

	write("loud", "")
	cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, "the broken file refused", func() bool {
		return strings.Contains(out.String(), "configuration reload refused")
	})
	if !ready() {
		t.Fatal("node not ready after the reloads")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20 s of SIGTERM")
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
