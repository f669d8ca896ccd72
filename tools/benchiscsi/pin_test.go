package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestCPUList(t *testing.T) {
	set := func(cpus ...int) unix.CPUSet {
		var s unix.CPUSet
		for _, c := range cpus {
			s.Set(c)
		}
		return s
	}
	for _, tc := range []struct {
		set  unix.CPUSet
		want string
	}{
		{set(0), "0"},
		{set(1, 2, 3), "1-3"},
		{set(1, 3), "1,3"},
		{set(0, 2, 3, 4, 7, 9, 10), "0,2-4,7,9-10"},
		{set(), ""},
	} {
		if got := cpuList(tc.set); got != tc.want {
			t.Errorf("cpuList = %q, want %q", got, tc.want)
		}
	}
}

// TestSplitCPUs checks the split covers exactly the allowed CPUs, with
// one for the initiators.
func TestSplitCPUs(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	s, err := splitCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if s.initiator.Count() != 1 || s.initiator.Count()+s.target.Count() != allowed.Count() {
		t.Fatalf("split %s / %s of %s", cpuList(s.initiator), cpuList(s.target), cpuList(allowed))
	}
	if s.all() != allowed {
		t.Fatalf("all() = %s, want %s", cpuList(s.all()), cpuList(allowed))
	}
}

func TestQemuFigures(t *testing.T) {
	out := "Sending 2000 write requests, 1048576 bytes each, 8 in parallel (starting at offset 0, step size 1048576)\nRun completed in 2.155 seconds.\n"
	m := qemuRe.FindStringSubmatch(out)
	if m == nil || m[1] != "2.155" {
		t.Fatalf("parsed %q", m)
	}
}
