package store

import (
	"context"
	"fmt"
	"os"
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

// BenchmarkSequentialWrite: 1 MiB writes to a 16 MiB file and a Sync, on
// one node over an in-memory device (the store's own cost, no disk).
func BenchmarkSequentialWrite(b *testing.B) {
	dev := newMem(b, 16384, FormatOptions{})
	s := openNode(b, dev, NewMemLocks(), "a", 0)
	defer s.Close()
	chunk := make([]byte, 1<<20)
	b.SetBytes(16 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := s.OpenFile("large", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		for k := 0; k < 16; k++ {
			if _, err := f.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
