package storenode

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/store"
)

// A node killed while it held the format lock (every node killed during
// the cluster's first start) leaves it orphaned until a recovery that
// needs a store open: the next formatter takes it over the orphan.
func TestFormatLockTakenOverADeadHolder(t *testing.T) {
	lm := store.NewMemLocks()
	dead, err := lockFormat(context.Background(), lm.Node("a"))
	if err != nil {
		t.Fatal(err)
	}
	_ = dead
	// A live holder is waited for.
	ctx, cancel := context.WithTimeout(context.Background(), 3*formatOrphanCheck)
	_, err = lockFormat(ctx, lm.Node("b"))
	cancel()
	if err == nil {
		t.Fatal("the format lock was granted while a live node held it")
	}
	lm.Kill("a")
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := lockFormat(ctx, lm.Node("b"))
	if err != nil {
		t.Fatalf("format lock behind a dead holder: %v", err)
	}
	if err := l.Use(); err != nil {
		t.Fatal(err)
	}
	// And while b holds it, c waits (a recovery grant conflicts too).
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*formatOrphanCheck)
	defer cancel2()
	if _, err := lockFormat(ctx2, lm.Node("c")); err == nil {
		t.Fatal("two nodes got the format lock at once")
	}
	l.Release()
}
