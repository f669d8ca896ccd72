package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/etcdtest"
)

// TestLockctlSaysTLSAtOnce: lockctl acquire (the command that talks to
// etcd itself) without --config against a cluster's etcd (mutual TLS) says
// that TLS is needed and how to give it, at once; with a certificate of
// another CA it names the refusal.
func TestLockctlSaysTLSAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	pki := t.TempDir()
	if err := cluster.EnsureLocalCA(pki); err != nil {
		t.Fatal(err)
	}
	files, err := cluster.IssueCert(pki, t.TempDir(), "etcd", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	addr := etcdtest.StartTLS(t, files.CA, files.Cert, files.Key)
	other := t.TempDir()
	if err := cluster.EnsureLocalCA(other); err != nil {
		t.Fatal(err)
	}
	foreign, err := cluster.IssueCert(other, t.TempDir(), "lockctl", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		says []string
	}{
		{[]string{"acquire", "r", "EX"}, []string{"requires TLS", "--config"}},
		{[]string{"--cacert", filepath.Join(pki, "ca.pem"), "--cert", foreign.Cert, "--key", foreign.Key, "acquire", "r", "EX"}, []string{"tls: unknown certificate authority"}},
		{[]string{"--cacert", foreign.CA, "--cert", foreign.Cert, "--key", foreign.Key, "acquire", "r", "EX"}, []string{"certificate signed by unknown authority"}},
	} {
		start := time.Now()
		_, err := run(t, strings.NewReader(""), append([]string{"--endpoints", addr}, c.args...)...)
		took := time.Since(start)
		t.Logf("lockctl %v: %v (%v)", c.args, err, took)
		if err == nil {
			t.Fatalf("lockctl %v succeeded", c.args)
		}
		for _, s := range c.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("lockctl %v: error does not say %q", c.args, s)
			}
		}
		if took > 5*time.Second {
			t.Errorf("lockctl %v took %v to fail", c.args, took)
		}
	}
}
