package store

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// newMem returns a formatted in-memory device of blocks blocks.
func newMem(t testing.TB, blocks int64, opts FormatOptions) *blockdev.Mem {
	t.Helper()
	m, err := blockdev.NewMem(blocks*BlockSize, 512)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Slots == 0 {
		opts.Slots = 4
	}
	if _, err := Format(context.Background(), m, opts); err != nil {
		t.Fatal(err)
	}
	return m
}

// openNode opens slot on dev with locks from lm as node name, with no
// periodic checkpoint unless a tweak sets Config.CheckpointInterval: what a
// test finds in a journal (a dead node's transactions to replay, the
// writes a replay makes) is then what its operations left, however slow
// the machine.
func openNode(t testing.TB, dev blockdev.Device, lm *MemLocks, name string, slot int, tweak ...func(*Config)) *Store {
	t.Helper()
	cfg := DefaultConfig(dev, slot, lm.Node(name))
	cfg.CheckpointInterval = noPeriodicCheckpoint
	cfg.Logger = testlog.New(t, name)
	for _, f := range tweak {
		f(&cfg)
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open slot %d: %v", slot, err)
	}
	// A node the test killed (MemLocks.Kill) and never closed keeps
	// retrying to hand its cached locks on, logging each failure, until
	// its store closes: close it before the test's log goes away. A store
	// the test closed already answers ErrClosed.
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// checkClean fails the test unless an offline check of dev is clean.
func checkClean(t testing.TB, dev blockdev.Device) {
	t.Helper()
	rep, err := CheckDevice(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
}

// noPeriodicCheckpoint is a Config.CheckpointInterval no test lasts: the
// store then writes only when the test makes it.
const noPeriodicCheckpoint = 24 * time.Hour

func blockdevKeepAll() blockdev.CrashOptions { return blockdev.CrashOptions{KeepProbability: 1} }

// mkdirs makes each directory (with its parents) on s.
func mkdirs(t testing.TB, s *Store, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := s.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}
