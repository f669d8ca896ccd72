package store

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkStatBigDirectory: Stat of names in a 2,000-entry directory
// on one node (its blocks cached under the node's locks).
func BenchmarkStatBigDirectory(b *testing.B) {
	dev := newMem(b, 16384, FormatOptions{})
	s := openNode(b, dev, NewMemLocks(), "a", 0)
	defer s.Close()
	const n = 2000
	if err := s.MkdirAll("big", 0o755); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 50 {
		err := s.Update(context.Background(), func(tx *Tx) error {
			for j := i; j < i+50; j++ {
				if err := tx.WriteFile(fmt.Sprintf("big/e%05d", j), nil, 0o644); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Stat(fmt.Sprintf("big/e%05d", i%n)); err != nil {
			b.Fatal(err)
		}
	}
}
