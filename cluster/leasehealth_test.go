package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A lease lost, or nearly lost, to late renewals says why and what to
// change: keep-alive ticks that fired late mean the process did not get
// the CPU; ticks on time with no confirmation mean etcd did not answer.
func TestRenewalWatchSaysWhyRenewalsRanLate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const advice = "use the production profile"
	w := newRenewalWatch(t0, 250*time.Millisecond, 2*time.Second, advice)
	now := t0
	for range 4 { // renewals on time: nothing to say
		now = now.Add(250 * time.Millisecond)
		w.tick(now)
		if f := w.confirmed(now); f != nil {
			t.Fatalf("a renewal on time warns: %v", f)
		}
	}
	// The process gets no CPU for 1.2 s: the next tick fires late, and
	// the renewal it sends is confirmed 1.45 s after the previous one.
	now = now.Add(1200 * time.Millisecond)
	w.tick(now)
	now = now.Add(250 * time.Millisecond)
	f := w.confirmed(now)
	s := fmt.Sprint(f...)
	if f == nil || !strings.Contains(s, "keep-alives ran late") || !strings.Contains(s, "did not get the CPU") || !strings.Contains(s, advice) || !strings.Contains(s, "1.45s") {
		t.Fatalf("a nearly lost lease says %v", f)
	}
	// Once a minute at most.
	now = now.Add(1500 * time.Millisecond)
	w.tick(now)
	if f := w.confirmed(now); f != nil {
		t.Fatalf("a second warning within a minute: %v", f)
	}
	// Ticks on time, but etcd confirms nothing: the loss names etcd.
	for range 7 {
		now = now.Add(250 * time.Millisecond)
		w.tick(now)
	}
	s = fmt.Sprint(w.fields(now)...)
	if !strings.Contains(s, "etcd did not confirm") || strings.Contains(s, "CPU") || !strings.Contains(s, "1.75s") {
		t.Fatalf("a loss with ticks on time says %v", s)
	}
	// etcd has no quorum: each renewal waits out its 500 ms timeout, and
	// the tick after it comes at once (the ticker kept one) or within an
	// interval. The ticks are late only because they wait for the
	// renewals: the loss still names etcd, not the CPU.
	now = now.Add(time.Minute)
	w.returned(now)
	w.confirmed(now)
	for range 4 {
		now = now.Add(250 * time.Millisecond)
		w.tick(now)
		now = now.Add(500 * time.Millisecond)
		w.returned(now)
	}
	s = fmt.Sprint(w.fields(now)...)
	if !strings.Contains(s, "etcd did not confirm") || strings.Contains(s, "CPU") {
		t.Fatalf("a loss with renewals waiting on etcd says %v", s)
	}
}

// The advice names the fast profile's short lease and the alternative.
func TestLeaseAdviceNamesTheProfile(t *testing.T) {
	c := DefaultConfig()
	c.Profile = ProfileFast
	if a := c.leaseAdvice(); !strings.Contains(a, `profile "fast"`) || !strings.Contains(a, `profile = "production"`) || !strings.Contains(a, "2s") || !strings.Contains(a, "lease.ttl") {
		t.Fatalf("fast profile advice: %q", a)
	}
	c.Profile = ProfileProduction
	if a := c.leaseAdvice(); strings.Contains(a, `profile = "production"`) || !strings.Contains(a, "10s") {
		t.Fatalf("production profile advice: %q", a)
	}
}
