package iscsi_test

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/internal/testlog"
)

const testIQN = "iqn.2026-01.io.shoal:test"

// testConfig returns a config for lun of tgt with a test logger.
func testConfig(t testing.TB, tgt *tgtrig.Target, lun int) iscsi.Config {
	t.Helper()
	cfg, err := iscsi.ConfigFromURL(tgt.URL(lun))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = testlog.New(t, "iscsi")
	cfg.CommandTimeout = 20 * time.Second
	return cfg
}

func openDevice(t testing.TB, cfg iscsi.Config) *iscsi.Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := iscsi.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Target, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
