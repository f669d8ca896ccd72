package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/etcdtest"
)

// TestEtcdLegTable: against a cluster's etcd (mutual TLS), --etcd without
// certificates fails at once naming the flags that give them; with them,
// status and check write nothing to etcd (nor to the legs), and a command
// that changes the volume publishes the leg table there.
func TestEtcdLegTable(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk, starts etcd")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	pki := t.TempDir()
	if err := cluster.EnsureLocalCA(pki); err != nil {
		t.Fatal(err)
	}
	srv, err := cluster.IssueCert(pki, t.TempDir(), "etcd", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	addr := etcdtest.StartTLS(t, srv.CA, srv.Cert, srv.Key)
	cli, err := cluster.IssueCert(pki, t.TempDir(), "shoalblk", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	legs := []string{filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")}
	if _, err := run(t, bin, append([]string{"format", "--size", "4M", "--region-size", "64K"}, legs...)...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := run(t, bin, append([]string{"status", "--etcd", addr}, legs...)...)
	if err == nil || !strings.Contains(out, "requires TLS") || !strings.Contains(out, "--etcd-cacert") {
		t.Fatalf("status --etcd without certificates: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the TLS refusal took %v", took)
	}
	tlsFlags := []string{"--etcd", addr, "--etcd-cacert", cli.CA, "--etcd-cert", cli.Cert, "--etcd-key", cli.Key}
	keys := func() int64 {
		t.Helper()
		tc, err := cluster.ClientTLS(cli)
		if err != nil {
			t.Fatal(err)
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	for _, cmd := range []string{"status", "check"} {
		before := legSums(t, dir)
		if _, err := run(t, bin, append(append([]string{cmd}, tlsFlags...), legs...)...); err != nil {
			t.Fatalf("%s --etcd with the cluster's certificates: %v", cmd, err)
		}
		sameSums(t, cmd+" --etcd", before, legSums(t, dir))
		if n := keys(); n != 0 {
			t.Fatalf("%s --etcd wrote %d keys to etcd", cmd, n)
		}
	}
	if _, err := run(t, bin, append(append([]string{"resync"}, tlsFlags...), legs...)...); err != nil {
		t.Fatal(err)
	}
	if n := keys(); n == 0 {
		t.Fatal("resync --etcd did not publish the leg table")
	}
}
