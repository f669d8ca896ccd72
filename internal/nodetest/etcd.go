package nodetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/portres"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ExternalEtcd is a stand-alone etcd server process (the upstream etcd
// built from the same module version Shoal embeds), with mutual TLS from
// a CA of its own.
type ExternalEtcd struct {
	Endpoint string
	PKI      string
	Client   cluster.CertFiles
	cmd      *exec.Cmd
}

// StartExternalEtcd starts a one-member etcd cluster on loopback, waits
// until it serves and stops it at the end of the test.
func StartExternalEtcd(t testing.TB) *ExternalEtcd {
	t.Helper()
	bin := BinaryOf(t, "etcd", "go.etcd.io/etcd/server/v3")
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if err := cluster.EnsureLocalCA(pki); err != nil {
		t.Fatal(err)
	}
	srv, err := cluster.IssueCert(pki, pki, "etcd", []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := cluster.IssueCert(pki, pki, "client", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// Ports reserved (SO_REUSEPORT, never listened on) until etcd, told
	// --socket-reuse-port, serves on them.
	cr, err := portres.Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer cr.Release()
	pr, err := portres.Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Release()
	client, peer := cr.Addr(), pr.Addr()
	e := &ExternalEtcd{Endpoint: "https://" + client, PKI: pki, Client: cli}
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command(bin,
		"--name", "ext", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", e.Endpoint, "--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", "https://"+peer, "--initial-advertise-peer-urls", "https://"+peer,
		"--initial-cluster", "ext=https://"+peer,
		"--cert-file", srv.Cert, "--key-file", srv.Key, "--trusted-ca-file", srv.CA, "--client-cert-auth",
		"--peer-cert-file", srv.Cert, "--peer-key-file", srv.Key, "--peer-trusted-ca-file", srv.CA, "--peer-client-cert-auth",
		"--heartbeat-interval", "50", "--election-timeout", "500", "--socket-reuse-port",
	)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	done := make(chan struct{})
	go func() { e.cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			e.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Logf("---- external etcd log ----\n%s", tail(string(b), 60))
		}
	})
	tlsCfg, err := cluster.ClientTLS(cli)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, TLS: tlsCfg, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.Get(ctx, "probe")
			cancel()
			c.Close()
			if err == nil {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("external etcd did not serve within 30s: %v", err)
		}
		select {
		case <-done:
			t.Fatalf("external etcd exited: %v", fmt.Errorf("see log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// NodeArgs are the shoald arguments for a node using this etcd.
func (e *ExternalEtcd) NodeArgs(certs cluster.CertFiles) []string {
	return []string{"--etcd-mode", "external", "--endpoints", e.Endpoint, "--ca-file", certs.CA, "--cert-file", certs.Cert, "--key-file", certs.Key}
}
