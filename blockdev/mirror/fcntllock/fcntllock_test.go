package fcntllock

import (
	"context"
	"testing"
	"time"
)

func TestConflicts(t *testing.T) {
	l := New(t.TempDir())
	ctx := context.Background()
	u1, err := l.Lock(ctx, "v", 0, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	// Disjoint range: granted at once.
	u2, err := l.Lock(ctx, "v", 100, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	u2()
	// Overlapping exclusive range blocks until released.
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(short, "v", 50, 10, false); err == nil {
		t.Fatal("overlapping lock granted while held")
	}
	u1()
	s1, err := l.Lock(ctx, "v", 0, 100, false)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := l.Lock(ctx, "v", 50, 100, false)
	if err != nil {
		t.Fatal("two shared locks conflict")
	}
	s1()
	s2()
}
