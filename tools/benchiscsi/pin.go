package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cpuSplit divides the CPUs this process may use between the initiators
// and the target, so that they do not take turns on the same cores: on
// a deployment they run on different machines.
type cpuSplit struct {
	initiator, target unix.CPUSet
}

// all is every CPU of the split.
func (s cpuSplit) all() unix.CPUSet {
	set := s.initiator
	for cpu := 0; cpu < 1024; cpu++ {
		if s.target.IsSet(cpu) {
			set.Set(cpu)
		}
	}
	return set
}

// splitCPUs gives the first allowed CPU to the initiators and the rest to
// the target; on a machine with a single CPU the target gets none.
func splitCPUs() (cpuSplit, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return cpuSplit{}, fmt.Errorf("CPU affinity: %w", err)
	}
	var s cpuSplit
	first := true
	for cpu := 0; cpu < 1024; cpu++ {
		if !all.IsSet(cpu) {
			continue
		}
		if first {
			s.initiator.Set(cpu)
			first = false
		} else {
			s.target.Set(cpu)
		}
	}
	return s, nil
}

// pinProcess binds every thread of process pid to set; threads the
// process starts later inherit it from their creator.
func pinProcess(pid int, set unix.CPUSet) error {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	// Twice: a thread started while the first pass ran may have copied
	// the old mask.
	for pass := 0; pass < 2; pass++ {
		tasks, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pin thread %d of %d: %w", tid, pid, err)
			}
		}
	}
	return nil
}

// pinSelf binds this process to set and sizes the Go scheduler to it.
func pinSelf(set unix.CPUSet) error {
	if err := pinProcess(os.Getpid(), set); err != nil {
		return err
	}
	runtime.GOMAXPROCS(set.Count())
	return nil
}

// cpuList formats set as "0" or "1-3" or "1,3".
func cpuList(set unix.CPUSet) string {
	var parts []string
	for cpu := 0; cpu < 1024; cpu++ {
		if !set.IsSet(cpu) {
			continue
		}
		end := cpu
		for end+1 < 1024 && set.IsSet(end+1) {
			end++
		}
		if end == cpu {
			parts = append(parts, strconv.Itoa(cpu))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpu, end))
		}
		cpu = end
	}
	return strings.Join(parts, ",")
}
