package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs every case for a moment, so the tool keeps working.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	out := t.TempDir() + "/dlm.txt"
	if err := bench(100*time.Millisecond, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"uncontended", "cached re-acquire", "2-node ping-pong", "64 distinct (cached)", "shoal DLM", "etcd Mutex"} {
		if !strings.Contains(string(b), c) {
			t.Errorf("report lacks %q:\n%s", c, b)
		}
	}
}
