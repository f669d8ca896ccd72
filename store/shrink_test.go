package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// A node that touched more files than Config.MaxCachedLocks gives up the
// grants it used least lately, written back first: it keeps at most the
// limit, another node reads every file whole and new (the blocks were
// checkpointed before the grants went), and the node asks again for what
// it uses next.
func TestIdleGrantsBeyondTheLimitAreGivenUp(t *testing.T) {
	const limit = 32
	dev, a, b := limitedAndPlain(t, limit)
	content := func(i, v int) string { return strings.Repeat(fmt.Sprintf("file %d version %d;", i, v), 10) }
	const files = 200
	for i := range files {
		if err := a.WriteFile(fmt.Sprintf("d/f%d", i), []byte(content(i, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.held.Load() > limit && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := a.held.Load(); n > limit {
		t.Fatalf("node keeps %d grants after creating %d files, limit %d", n, files, limit)
	}
	asked := a.Stats().LockRequests
	for i := range files {
		name := fmt.Sprintf("d/f%d", i)
		for _, s := range []*Store{b, a} {
			got, err := s.ReadFile(name)
			if err != nil || string(got) != content(i, 1) {
				t.Fatalf("%s read %s = %q (%v), want %q", s.cfg.Owner, name, got, err, content(i, 1))
			}
		}
	}
	if a.Stats().LockRequests == asked {
		t.Fatalf("node read %d files whose grants it gave up without asking for any", files)
	}
	if err := a.WriteFile("d/f0", []byte(content(0, 2)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := b.ReadFile("d/f0"); err != nil || string(got) != content(0, 2) {
		t.Fatalf("other node read %q (%v) after the rewrite, want %q", got, err, content(0, 2))
	}
	a.Close()
	b.Close()
	checkClean(t, dev)
}

// limitedAndPlain opens node a, which keeps at most limit grants cached,
// and node b, with the defaults, on a new store with a directory d.
func limitedAndPlain(t *testing.T, limit int) (blockdev.Device, *Store, *Store) {
	t.Helper()
	dev := newMem(t, 8192, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0, func(c *Config) { c.MaxCachedLocks = limit })
	b := openNode(t, dev, lm, "b", 1)
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	return dev, a, b
}

// glockCount is how many glocks s keeps in its map.
func glockCount(s *Store) int {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	return len(s.glocks)
}

// The structures of locks a node gave up go too (prune): a node that
// touched thousands of files keeps about the ones it holds, and reads and
// rewrites every file right afterwards, on both nodes.
func TestPruneForgetsLocksNotHeld(t *testing.T) {
	const limit = 32
	dev, a, b := limitedAndPlain(t, limit)
	content := func(i, v int) string { return fmt.Sprintf("file %d version %d", i, v) }
	const files = 600
	for i := range files {
		if err := a.WriteFile(fmt.Sprintf("d/f%d", i), []byte(content(i, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// b takes half of them EX: a's grants go, as they go to other nodes.
	for i := 0; i < files; i += 2 {
		if err := b.WriteFile(fmt.Sprintf("d/f%d", i), []byte(content(i, 2)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := glockCount(a)
	testutil.WaitFor(t, 10*time.Second, "node a's checkpoint", func() bool { return a.jr.checkpointed.Load() == a.jr.lastSeq })
	n := a.prune()
	after := glockCount(a)
	if n == 0 || after > int(a.held.Load())+8 {
		t.Fatalf("prune removed %d of %d glocks, %d left for %d grants held", n, before, after, a.held.Load())
	}
	t.Logf("glocks: %d before prune, %d after, %d grants held", before, after, a.held.Load())
	for i := range files {
		want := content(i, 1+(i+1)%2)
		name := fmt.Sprintf("d/f%d", i)
		for _, s := range []*Store{a, b} {
			if got, err := s.ReadFile(name); err != nil || string(got) != want {
				t.Fatalf("%s: %s = %q (%v), want %q", s.cfg.Owner, name, got, err, want)
			}
		}
		if err := a.WriteFile(name, []byte(content(i, 3)), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := b.ReadFile(name); err != nil || string(got) != content(i, 3) {
			t.Fatalf("b: %s = %q (%v) after a's rewrite", name, got, err)
		}
	}
	a.Close()
	b.Close()
	checkClean(t, dev)
}

// A glock a caller looked up before prune removed it is put back by its
// next lock; when another took its place meanwhile, the transaction
// starts over with that one, and commits.
func TestPrunedGlockInUse(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	s := openNode(t, dev, lm, "a", 0)
	defer s.Close()
	if err := s.WriteFile("f", []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := s.Stat("f")
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(FileStat).Ino
	drop := func() {
		t.Helper()
		g := s.glockFor(classInode, ino)
		g.mu.Lock()
		if g.hold != nil {
			if err := g.dropLocked(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		g.mu.Unlock()
		testutil.WaitFor(t, 10*time.Second, "checkpoint", func() bool { return s.jr.checkpointed.Load() == s.jr.lastSeq })
		if s.prune() == 0 {
			t.Fatal("nothing pruned")
		}
	}
	for _, replaced := range []bool{false, true} {
		drop()
		stale := s.glockFor(classInode, ino) // looked up, not locked yet
		drop()
		if !stale.gone {
			t.Fatal("the glock looked up was not pruned")
		}
		if replaced {
			s.glockFor(classInode, ino) // another takes its place
		}
		runs := 0
		err := s.Update(context.Background(), func(tx *Tx) error {
			runs++
			g := stale
			if runs > 1 {
				g = s.glockFor(classInode, ino)
			}
			if err := tx.lock(g, Exclusive); err != nil {
				return err
			}
			return tx.WriteFile("f", []byte(fmt.Sprintf("v%d", runs)), 0o644)
		})
		want := 1
		if replaced {
			want = 2
		}
		if err != nil || runs != want {
			t.Fatalf("replaced %v: %v after %d runs, want nil after %d", replaced, err, runs, want)
		}
		if got := s.glockFor(classInode, ino); got == stale == replaced {
			t.Fatalf("replaced %v: the map holds the pruned glock %v", replaced, got == stale)
		}
		if b, err := s.ReadFile("f"); err != nil || string(b) != fmt.Sprintf("v%d", want) {
			t.Fatalf("f = %q (%v)", b, err)
		}
	}
}

// Two nodes rewriting, reading, renaming and removing files while prune
// runs without pause on both: every read after a write returns it, on the
// other node too, and the store checks clean.
func TestPruneUnderLoad(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{})
	lm := NewMemLocks()
	nodes := []*Store{openNode(t, dev, lm, "a", 0), openNode(t, dev, lm, "b", 1)}
	if err := nodes[0].MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var pruned sync.WaitGroup
	var removed atomic.Int64
	for _, s := range nodes {
		pruned.Add(1)
		go func() {
			defer pruned.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				removed.Add(int64(s.prune()))
				time.Sleep(200 * time.Microsecond)
			}
		}()
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own, other := nodes[w%2], nodes[(w+1)%2]
			for i := range 150 {
				name := fmt.Sprintf("d/w%d-%d", w, i/5%10)
				v := fmt.Sprintf("writer %d round %d", w, i)
				var err error
				switch i % 5 {
				case 3:
					err = own.Rename(name, name+".moved")
					if err == nil {
						err = other.Rename(name+".moved", name)
					}
				case 4:
					err = other.Remove(name)
				default:
					err = own.WriteFile(name, []byte(v), 0o644)
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, i, err)
					return
				}
				if i%5 < 3 {
					if got, err := other.ReadFile(name); err != nil || string(got) != v {
						errs <- fmt.Errorf("writer %d round %d: other node read %q (%v), want %q", w, i, got, err, v)
						return
					}
				} else if i%5 == 4 {
					if _, err := own.Stat(name); !errors.Is(err, fs.ErrNotExist) {
						errs <- fmt.Errorf("writer %d round %d: stat after remove on the other node: %v", w, i, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	pruned.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if removed.Load() == 0 {
		t.Fatal("prune removed nothing under load: the test shows nothing")
	}
	t.Logf("prune removed %d glocks during the run", removed.Load())
	for _, s := range nodes {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkClean(t, dev)
}

// BenchmarkPrune20k: one prune of 20,000 idle glocks.
func BenchmarkPrune20k(b *testing.B) {
	dev := newMem(b, 4096, FormatOptions{})
	s := openNode(b, dev, NewMemLocks(), "a", 0)
	defer s.Close()
	for b.Loop() {
		b.StopTimer()
		for i := range 20000 {
			s.glockFor(classInode, uint64(1<<20+i))
		}
		b.StartTimer()
		if n := s.prune(); n < 20000 {
			b.Fatalf("pruned %d", n)
		}
	}
}

// Stats answered from the lock caches (quickStat, as ls -l and a web
// node's GETs make them) count as uses: past the limit the shrink gives up
// the grants of files nobody looked at since, not those of the files
// being listed.
func TestShrinkKeepsWhatStatsUse(t *testing.T) {
	const limit, listed, old, added = 128, 40, 40, 55
	_, a, _ := limitedAndPlain(t, limit)
	if err := a.MkdirAll("listed", 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(format string, n int) {
		t.Helper()
		for i := range n {
			if err := a.WriteFile(fmt.Sprintf(format, i), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("listed/f%d", listed)
	write("d/old%d", old)
	// The grants asked for ahead of the creates (lockAhead) are in: one
	// asked late, for a block a create has taken since, would count as a
	// use of that file.
	a.aheadWG.Wait()
	if n := a.held.Load(); n >= limit {
		t.Fatalf("%d grants held before the test's point, limit %d: the shrink may have run", n, limit)
	}
	// The listed files are looked at after the others were written.
	for i := range listed {
		if _, err := a.Stat(fmt.Sprintf("listed/f%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	base := a.Stats().LockReleases
	// Over the limit: the shrink gives up about 20 grants, fewer than
	// the old files hold.
	write("d/new%d", added)
	deadline := time.Now().Add(10 * time.Second)
	for a.held.Load() > limit && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	gaveUp := a.Stats().LockReleases - base
	if gaveUp == 0 || gaveUp >= old {
		t.Fatalf("the shrink gave up %d grants, want 1 to %d", gaveUp, old-1)
	}
	// Each listed file is still answered from the caches: its grants
	// and its directory's are still held.
	var lost []string
	for i := range listed {
		if name := fmt.Sprintf("listed/f%d", i); a.quickStat(name, true) == nil {
			lost = append(lost, name)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("the shrink gave up %d grants, among them those of %d files looked at last: %v", gaveUp, len(lost), lost)
	}
}
