package etcdprobe_test

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/etcdprobe"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/internal/portres"
)

// startTLSEtcd starts a one-member etcd that, like a Shoal node, demands
// client certificates from the CA in pki.
func startTLSEtcd(t *testing.T, pki string) string {
	t.Helper()
	files, err := cluster.IssueCert(pki, t.TempDir(), "etcd", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return etcdtest.StartTLS(t, files.CA, files.Cert, files.Key)
}

// TestCheckSaysWhy: a client with no TLS, without a certificate, with a
// certificate of another CA, or trusting another CA, is told so at once;
// the cluster's own certificate passes; a closed port is unreachable.
func TestCheckSaysWhy(t *testing.T) {
	pki := t.TempDir()
	if err := cluster.EnsureLocalCA(pki); err != nil {
		t.Fatal(err)
	}
	addr := startTLSEtcd(t, pki)
	other := t.TempDir()
	if err := cluster.EnsureLocalCA(other); err != nil {
		t.Fatal(err)
	}
	tlsFrom := func(caDir, trust string) *tls.Config {
		t.Helper()
		files, err := cluster.IssueCert(caDir, t.TempDir(), "client", []string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		files.CA = filepath.Join(trust, "ca.pem")
		c, err := cluster.ClientTLS(files)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	noCert, err := cluster.ClientTLS(cluster.CertFiles{CA: filepath.Join(pki, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		tc   *tls.Config
		want error
		says string
	}{
		{"no TLS", nil, etcdprobe.ErrTLSRequired, "no certificates"},
		{"no client certificate", noCert, etcdprobe.ErrTLS, "certificate"},
		{"certificate of another CA", tlsFrom(other, pki), etcdprobe.ErrTLS, "certificate"},
		{"trusting another CA", tlsFrom(pki, other), etcdprobe.ErrTLS, "unknown authority"},
		{"the cluster's certificate", tlsFrom(pki, pki), nil, ""},
	} {
		start := time.Now()
		err := etcdprobe.Check(ctx, []string{"https://" + addr}, c.tc)
		took := time.Since(start)
		t.Logf("%s: %v (%v)", c.name, err, took)
		if c.want == nil {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: got %v, want %v saying %q", c.name, err, c.want, c.says)
		}
		if took > 3*etcdprobe.Timeout {
			t.Errorf("%s: took %v", c.name, took)
		}
	}
	// A port bound but never listened on: connections are refused, and
	// no other program can take it meanwhile.
	res, err := portres.Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	closed := res.Addr()
	if err := etcdprobe.Check(ctx, []string{closed}, nil); !errors.Is(err, etcdprobe.ErrUnreachable) {
		t.Errorf("closed port: %v", err)
	}
}
