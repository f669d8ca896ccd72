package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs every case for a few ops, so the tool keeps working:
// every row of the report is there and every case completed ops. The
// figures themselves mean nothing here (make bench-dlm measures). The
// leases get a long TTL so that a loaded machine does not expire them.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	out := t.TempDir() + "/dlm.txt"
	if err := bench(options{dur: 50 * time.Millisecond, maxOps: 3, ttl: 30 * time.Second}, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	cases := []string{"uncontended", "cached re-acquire", "2-node ping-pong", "2-node strict turns", "64 distinct (cached)", "64 distinct (no caching)"}
	for _, c := range cases {
		for _, impl := range []string{"shoal DLM", "etcd Mutex"} {
			row := findRow(report, c, impl)
			if row == "" {
				t.Errorf("report lacks a %q row for %q:\n%s", impl, c, report)
				continue
			}
			// After the name and impl: ops/s, p50, p99[, ratio].
			f := strings.Fields(strings.TrimPrefix(strings.TrimPrefix(row, c), " "))
			f = f[len(strings.Fields(impl)):]
			if rate, err := strconv.ParseFloat(f[0], 64); err != nil || rate <= 0 {
				t.Errorf("%s/%s: ops/s %q, want a positive number:\n%s", c, impl, f[0], report)
			}
		}
	}
}

// findRow returns the report line of case c and implementation impl.
func findRow(report, c, impl string) string {
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, c+" ") && strings.Contains(l, " "+impl+" ") {
			return l
		}
	}
	return ""
}
