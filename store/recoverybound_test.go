package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A transaction bounded in its wait for a dead node's lock fails with
// ErrRecovering within the bound, commits nothing, and leaves the other
// locks alone; once the recovery has released the lock it goes through.
func TestUpdateRecoveryBound(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	mkdirs(t, b, "keys", "other")
	// a rewrites keys/k last: the file and keys/ are a's (EX) when it dies.
	if err := a.WriteFile("keys/k", []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	lm.Kill("a")
	start := time.Now()
	err := b.UpdateRecoveryBound(context.Background(), 300*time.Millisecond, func(tx *Tx) error {
		return tx.WriteFile("keys/k", []byte("b"), 0o644)
	})
	took := time.Since(start)
	if !errors.Is(err, ErrRecovering) {
		t.Fatalf("write of a dead node's file: %v, want ErrRecovering", err)
	}
	if took > 5*time.Second {
		t.Fatalf("ErrRecovering after %v, bound 300ms", took)
	}
	// Unrelated work goes on meanwhile, bounded or not.
	err = b.UpdateRecoveryBound(context.Background(), 300*time.Millisecond, func(tx *Tx) error {
		return tx.WriteFile("other/o", []byte("b"), 0o644)
	})
	if err != nil {
		t.Fatalf("unrelated write: %v", err)
	}
	if _, err := b.ReplaySlot(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	lm.ReleaseDead("a")
	err = b.UpdateRecoveryBound(context.Background(), 300*time.Millisecond, func(tx *Tx) error {
		return tx.WriteFile("keys/k", []byte("b"), 0o644)
	})
	if err != nil {
		t.Fatalf("after the recovery: %v", err)
	}
	if got, err := b.ReadFile("keys/k"); err != nil || string(got) != "b" {
		t.Fatalf("keys/k = %q, %v", got, err)
	}
	b.Close()
	checkClean(t, dev)
}
