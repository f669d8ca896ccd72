package zaphclog

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"

	"github.com/shoal-ha/shoal/internal/clock"
)

// A flood of etcd's slow-machine warnings becomes one line per window at
// its level, carrying the count of those logged at debug in between;
// never-actionable warnings go to debug; other warnings and errors pass.
func TestNoiseIsRateLimitedErrorsPass(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC))
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: &buf})
	core := &hclogCore{log: log, min: hclog.Warn, quiet: new(atomic.Bool), noise: newNoiseFilter(clk, time.Minute)}
	lg := zap.New(core)
	for range 100 {
		lg.Warn("apply request took too long", zap.Duration("took", 150*time.Millisecond))
		clk.Advance(100 * time.Millisecond) // 100 in 10 s
	}
	for range 850 { // a restarted member's publish retries, in 16 ms
		lg.Warn("failed to publish local member to cluster through raft", zap.String("error", "etcdserver: too many requests"))
	}
	lg.Warn("failed to apply request", zap.String("error", "lease not found"))
	lg.Warn("failed to apply request", zap.String("error", "mvcc: database space exceeded"))
	lg.Error("apply request took too long") // an error is never held back
	lg.Warn("some new warning")
	clk.Advance(time.Minute)
	lg.Warn("apply request took too long")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	count := func(s string) int {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, s) {
				n++
			}
		}
		return n
	}
	if n := count("[WARN]  apply request took too long"); n != 2 {
		t.Errorf("%d warnings of the slow apply, want 2 (one per minute):\n%s", n, buf.String())
	}
	if !strings.Contains(lines[len(lines)-1], "repeated_since_last=99") {
		t.Errorf("the next minute's line does not count the 99 held back: %q", lines[len(lines)-1])
	}
	if n := count("failed to publish local member"); n != 1 {
		t.Errorf("%d lines of 850 publish retries, want 1", n)
	}
	if count("lease not found") != 0 || count("database space exceeded") != 1 {
		t.Errorf("failed-apply lines: want the expired lease's at debug, the other at warn:\n%s", buf.String())
	}
	if count("[ERROR] apply request took too long") != 1 || count("some new warning") != 1 {
		t.Errorf("errors and other warnings must pass:\n%s", buf.String())
	}
}
