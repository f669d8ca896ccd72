package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOnlineCheckDuringRenames runs the online check on one node again and
// again while another node moves files between two directories (one the
// check walks before the other, one after), moves a directory back and
// forth, and rewrites a file (its blocks freed and handed out again). A
// file moved from a directory the check has seen to one it has not is
// reached twice, and blocks a file let go and another got are claimed
// twice; the check must tell that from a real double use (under the locks
// of both owners) and find nothing wrong. Bounded in rounds and time.
func TestOnlineCheckDuringRenames(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{Slots: 3})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	defer a.Close()
	defer b.Close()
	mkdirs(t, b, "a1", "m", "z9", "m/sub")
	for i := 0; i < 4; i++ {
		if err := b.WriteFile(fmt.Sprintf("a1/f%d", i), bytes.Repeat([]byte{byte(i)}, 2*BlockSize+i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.WriteFile("m/sub/deep", []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stop atomic.Bool
	var moves atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		where := [4]string{"a1", "a1", "a1", "a1"}
		sub := "m/sub"
		for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
			f := i % 4
			to := "z9"
			if where[f] == "z9" {
				to = "a1"
			}
			if err := b.Rename(fmt.Sprintf("%s/f%d", where[f], f), fmt.Sprintf("%s/f%d", to, f)); err != nil {
				errc <- err
				return
			}
			where[f] = to
			nsub := "a1/sub"
			if sub == nsub {
				nsub = "z9/sub"
			}
			if i%3 == 0 {
				if err := b.Rename(sub, nsub); err != nil {
					errc <- err
					return
				}
				sub = nsub
			}
			if err := b.WriteFile(fmt.Sprintf("%s/f%d", to, f), bytes.Repeat([]byte{byte(i)}, 2*BlockSize+i%100), 0o644); err != nil {
				errc <- err
				return
			}
			moves.Add(1)
		}
	}()
	checks, rechecked := 0, 0
	// Until the other node has moved files 100 times (bounded in checks
	// and time).
	for ; moves.Load() < 100 && checks < 5000 && ctx.Err() == nil; checks++ {
		rep, err := a.Check(ctx)
		if rep != nil {
			rechecked += rep.Rechecked
		}
		if err != nil {
			t.Errorf("check %d: %v", checks, err)
			break
		}
		if rep.Err() != nil {
			t.Errorf("check %d after %d moves: %v", checks, moves.Load(), rep.Err())
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	t.Logf("%d online checks during %d moves; %d suspected problems were changes in flight", checks, moves.Load(), rechecked)
	if moves.Load() < 10 {
		t.Fatalf("only %d moves during the checks", moves.Load())
	}
}

// TestOnlineCheckFindsRealDoubleUse: what the online check looks at again
// under both owners' locks is still reported when it is real: a file
// named by two entries, a data block two files use.
func TestOnlineCheckFindsRealDoubleUse(t *testing.T) {
	f := newRepairFixture(t)
	a := f.ino["data/a"]
	f.editEntry(t, "site", "about.html", func(e *dirEntry) bool {
		in := f.inode(t, a)
		e.Ino, e.Gen = a, in.Gen
		return true
	})
	in := f.inode(t, f.ino["data/b"])
	in.Extents[0].Disk = f.firstData(t, "site/img/logo.png")
	f.setInode(in)
	s := openNode(t, f.mem, NewMemLocks(), "a", 0)
	defer s.Close()
	rep, err := s.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var named, used bool
	for _, p := range rep.Problems {
		t.Logf("problem: %s", p)
		named = named || (p.Ino == a && p.Path == "/site/about.html" && strings.Contains(p.What, "also named at /data/a"))
		used = used || (p.Ino == f.ino["site/img/logo.png"] && strings.Contains(p.What, fmt.Sprintf("data block is also used by inode %d", f.ino["data/b"])))
	}
	if !named || !used {
		t.Fatalf("online check missed a real double use (named %v, block %v): %v", named, used, rep.Problems)
	}
}
