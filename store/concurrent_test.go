package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
)

// TestConcurrentReadsOnOneNode reads one file from many goroutines of one
// node at once, through the io/fs path and through transactions, while
// another goroutine rewrites a neighbour in the same directory. Cached
// block images are shared by every reader of the node: a reader that wrote
// into one (even to put back what it found) would race with the others
// (seen by -race) and make them see a block with a zero checksum.
func TestConcurrentReadsOnOneNode(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	s := openNode(t, dev, lm, "a", 0)
	defer s.Close()
	if err := s.MkdirAll("site", 0o755); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1 KiB: inline
	if err := s.WriteFile("site/a.bin", want, 0o644); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{7}, 3*BlockSize+100) // extents
	if err := s.WriteFile("site/b.bin", big, 0o644); err != nil {
		t.Fatal(err)
	}
	const readers, rounds = 16, 50
	ctx := context.Background()
	errs := make(chan error, readers+1)
	var wg sync.WaitGroup
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				var got []byte
				var err error
				switch (r + i) % 3 {
				case 0:
					var f interface {
						io.Reader
						Close() error
					}
					f, err = s.Open("site/a.bin")
					if err == nil {
						got, err = io.ReadAll(f)
						f.Close()
					}
				case 1:
					got, err = s.ReadFile("site/a.bin")
				case 2:
					err = s.Update(ctx, func(tx *Tx) error {
						var e error
						got, e = tx.ReadFile("site/a.bin")
						if e != nil {
							return e
						}
						b, e := tx.ReadFile("site/b.bin")
						if e == nil && !bytes.Equal(b, big) {
							e = fmt.Errorf("site/b.bin: %d bytes differ", len(b))
						}
						return e
					})
				}
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("site/a.bin: read %d bytes, want %d", len(got), len(want))
				}
				if err != nil {
					errs <- fmt.Errorf("reader %d round %d: %w", r, i, err)
					return
				}
			}
		}(r)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			if err := s.WriteFile("site/c.bin", []byte(fmt.Sprint(i)), 0o644); err != nil {
				errs <- fmt.Errorf("writer round %d: %w", i, err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkClean(t, dev)
}
