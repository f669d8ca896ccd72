package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/internal/etcdprobe"
	"github.com/shoal-ha/shoal/internal/etcdtest"
)

// TestJoinWithoutTheClusterCertificatesSaysSo: a node joining with
// certificates of another CA is told that TLS failed, at once, instead of
// "context deadline exceeded" after the start timeout.
func TestJoinWithoutTheClusterCertificatesSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	pki, other := t.TempDir(), t.TempDir()
	for _, d := range []string{pki, other} {
		if err := EnsureLocalCA(d); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := IssueCert(pki, t.TempDir(), "node1", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	addr := etcdtest.StartTLS(t, srv.CA, srv.Cert, srv.Key)
	mine, err := IssueCert(other, t.TempDir(), "node4", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := validBase()
	cfg.NodeName = "node4"
	cfg.Etcd.Join = "https://" + addr
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = addSelfAsMember(context.Background(), &cfg, mine, "https://127.0.0.4:2380", hclog.NewNullLogger())
	took := time.Since(start)
	t.Logf("join: %v (%v)", err, took)
	if !errors.Is(err, etcdprobe.ErrTLS) {
		t.Fatalf("join with another CA's certificates: %v, want a TLS failure", err)
	}
	if took > 5*time.Second {
		t.Fatalf("join took %v to fail", took)
	}
}
