package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sync"
	"testing"
)

// Two nodes share one device: what one commits, the other reads at once;
// cached locks are reused without asking the lock manager again.
func TestTwoNodesCoherent(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	if err := a.MkdirAll("shared", 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		data := []byte(fmt.Sprintf("version %d %s", i, bytes.Repeat([]byte{'x'}, i*500)))
		w, r := a, b
		if i%2 == 1 {
			w, r = b, a
		}
		if err := w.WriteFile("shared/f", data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadFile("shared/f")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: other node read %d bytes (%v), want %d", i, len(got), err, len(data))
		}
	}
	// Reads on one node with nobody else writing are served from cache.
	before := a.Stats()
	for i := 0; i < 50; i++ {
		if _, err := a.ReadFile("shared/f"); err != nil {
			t.Fatal(err)
		}
	}
	after := a.Stats()
	if after.LockRequests-before.LockRequests > 3 {
		t.Fatalf("50 reads asked the lock manager %d times", after.LockRequests-before.LockRequests)
	}
	if err := b.Rename("shared/f", "shared/g"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Stat("shared/f"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("renamed file still seen by the other node: %v", err)
	}
	a.Close()
	b.Close()
	checkClean(t, dev)
}

// Three nodes do random operations in private and shared directories at
// once; every node ends with the same tree, and the check is clean.
func TestThreeNodesRandom(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{})
	lm := NewMemLocks()
	nodes := make([]*Store, 3)
	for i := range nodes {
		nodes[i] = openNode(t, dev, lm, fmt.Sprintf("n%d", i), i)
	}
	if err := nodes[0].MkdirAll("shared", 0o755); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for i, s := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			own := fmt.Sprintf("own%d", i)
			if err := s.MkdirAll(own, 0o755); err != nil {
				errc <- err
				return
			}
			for op := 0; op < 120; op++ {
				dir := own
				if rng.IntN(2) == 0 {
					dir = "shared"
				}
				name := fmt.Sprintf("%s/f%d", dir, rng.IntN(8))
				var err error
				switch rng.IntN(5) {
				case 0, 1:
					err = s.WriteFile(name, bytes.Repeat([]byte{byte(op)}, rng.IntN(9000)), 0o644)
				case 2:
					err = s.Remove(name)
				case 3:
					err = s.Rename(name, fmt.Sprintf("%s/f%d", dir, rng.IntN(8)))
				default:
					_, err = s.ReadFile(name)
				}
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					errc <- fmt.Errorf("node %d op %d on %s: %w", i, op, name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	want := treeOf(t, nodes[0])
	for i, s := range nodes[1:] {
		if got := treeOf(t, s); !equalTree(got, want) {
			t.Fatalf("node %d sees another tree", i+1)
		}
		rep, err := s.Check(context.Background())
		if err != nil || rep.Err() != nil {
			t.Fatalf("online check on node %d: %v %v", i+1, err, rep.Err())
		}
	}
	for _, s := range nodes {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkClean(t, dev)
}

// treeOf reads the whole tree: path -> contents ("/" suffix for dirs).
func treeOf(t testing.TB, s fs.FS) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(s, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[p+"/"] = ""
			return nil
		}
		b, err := fs.ReadFile(s, p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalTree(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestDirEntryInfoAcrossNodes: a listing's Info on one node (from the
// cache of the inode locks it holds, or the device) reports its own last
// writes, and what the other node committed up to its last checkpoint
// (the writer here checkpoints, as its CheckpointInterval makes it).
func TestDirEntryInfoAcrossNodes(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 5
	sizes := func(s *Store) []int64 {
		t.Helper()
		es, err := s.ReadDir("d")
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range es {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fi.Size())
		}
		return out
	}
	for round := 1; round <= 4; round++ {
		w, r := a, b
		if round%2 == 0 {
			w, r = b, a
		}
		for i := 0; i < files; i++ {
			if err := w.WriteFile(fmt.Sprintf("d/f%d", i), bytes.Repeat([]byte{'x'}, round*100+i), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := sizes(w); got[0] != int64(round*100) {
			t.Fatalf("round %d: the writer's own Info of d/f0 says %d bytes, want %d", round, got[0], round*100)
		}
		if err := w.checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Store{w, r} {
			got := sizes(s)
			for i := 0; i < files; i++ {
				if want := int64(round*100 + i); got[i] != want {
					t.Fatalf("round %d: Info of d/f%d says %d bytes, want %d", round, i, got[i], want)
				}
			}
		}
	}
	a.Close()
	b.Close()
	checkClean(t, dev)
}
