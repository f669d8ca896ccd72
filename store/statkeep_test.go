package store

import (
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/clock"
)

// A Stat that had to take a directory's lock from the node changing it
// keeps it Shared for statKeep: the Stats of the names beside it meanwhile
// ask the lock manager nothing, and the changing node's next create waits
// for the end of that time, not longer.
func TestStatKeepsTheDirectoryLockAWhile(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	withClock := func(c *Config) { c.Clock = clk }
	a := openNode(t, dev, lm, "a", 0, withClock)
	b := openNode(t, dev, lm, "b", 1, withClock)
	// a made the files (it keeps their inodes' locks); b changed the
	// directory last (it holds the directory's lock EX).
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"d/f0", "d/f1", "d/f2"} {
		if err := a.WriteFile(n, []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WriteFile("d/g", []byte("g"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Stat("d/f0"); err != nil { // takes the directory's lock (and the root's) from b
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.WriteFile("d/f3", []byte("new"), 0o644) }()
	select {
	case err := <-done:
		t.Fatalf("the other node's create ended (%v) while the Stat's hold lasts", err)
	case <-time.After(100 * time.Millisecond):
	}
	before := a.Stats().LockRequests
	for _, n := range []string{"d/f1", "d/f2", "d/f0"} {
		if _, err := a.Stat(n); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.Stats().LockRequests - before; n != 0 {
		t.Fatalf("Stats beside the first asked the lock manager %d times during the hold", n)
	}
	clk.Advance(statKeep)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the other node's create still waits after the hold")
	}
	if _, err := a.Stat("d/f3"); err != nil {
		t.Fatalf("Stat of the file made after the hold: %v", err)
	}
}
