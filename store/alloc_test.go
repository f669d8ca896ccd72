package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/testlog"
)

func TestAGOrder(t *testing.T) {
	for count := 1; count <= 20; count++ {
		for home := 0; home < count; home++ {
			o := agOrder(home, count)
			if len(o) != count || o[0] != home {
				t.Fatalf("agOrder(%d, %d) = %v: want every group once, the home first", home, count, o)
			}
			s := slices.Clone(o)
			slices.Sort(s)
			for i, ag := range s {
				if ag != i {
					t.Fatalf("agOrder(%d, %d) = %v is not a permutation", home, count, o)
				}
			}
		}
	}
	// Slots 0 and 1 on four groups: each fills a second group before it
	// comes to the other's home.
	if a, b := agOrder(0, 4), agOrder(1, 4); a[1] == 1 || b[1] == 0 || a[1] == b[1] {
		t.Fatalf("orders %v and %v meet early", a, b)
	}
}

// TestNodesAllocateApart: two nodes creating files and directories, each
// in its own directory, write blocks in different allocation groups
// (their homes), so neither asks for the other's group.
func TestNodesAllocateApart(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{AGBlocks: 1024})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	b := openNode(t, dev, lm, "b", 1)
	for _, n := range []struct {
		s    *Store
		name string
	}{{a, "a"}, {b, "b"}} {
		for i := 0; i < 20; i++ {
			if err := n.s.MkdirAll(fmt.Sprintf("%s/d%d", n.name, i), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := n.s.WriteFile(fmt.Sprintf("%s/d%d/f", n.name, i), make([]byte, 3*BlockSize), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	groupOf := func(s *Store, name string) int {
		t.Helper()
		fi, err := s.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		ino := fi.Sys().(FileStat).Ino
		return int((ino - s.sb.AGStart) / uint64(s.sb.AGBlocks))
	}
	for i := 0; i < 20; i++ {
		for _, c := range []struct {
			s    *Store
			name string
			home int
		}{{a, "a", 0}, {b, "b", 1}} {
			for _, p := range []string{fmt.Sprintf("%s/d%d", c.name, i), fmt.Sprintf("%s/d%d/f", c.name, i)} {
				if g := groupOf(c.s, p); g != c.home {
					t.Fatalf("%s is in allocation group %d; node %s's home is %d", p, g, c.name, c.home)
				}
			}
		}
	}
	a.Close()
	b.Close()
	checkClean(t, dev)
}

// TestManyNewInodesInOneTransaction: a transaction that creates many
// files takes each new inode's lock in lock order (no start-over per
// file), also while the locks of the next inodes are being asked for
// ahead.
func TestManyNewInodesInOneTransaction(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{})
	cfg := DefaultConfig(dev, 0, slowLocker{NewMemLocks().Node("a")})
	cfg.Logger = testlog.New(t, "a")
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		err := s.Update(context.Background(), func(tx *Tx) error {
			for i := 0; i < 60; i++ {
				if err := tx.WriteFile(fmt.Sprintf("d/r%d-%03d", round, i), []byte("x"), 0o644); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// Files with data in between, as a node creating small files does.
		for i := 0; i < 5; i++ {
			if err := s.WriteFile(fmt.Sprintf("d/data%d-%d", round, i), make([]byte, 3*BlockSize), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.Close()
	checkClean(t, dev)
}

// slowLocker answers lock requests after a while, as a lock manager over
// etcd does (a write and a grant), so requests are seen in flight.
type slowLocker struct{ Locker }

func (l slowLocker) Lock(ctx context.Context, name string, mode LockMode, opts LockOptions) (Lock, error) {
	select {
	case <-time.After(2 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return l.Locker.Lock(ctx, name, mode, opts)
}

// A lock asked for ahead never holds up Close: a local user holding the
// next free inode's lock (a transaction still running) makes the ask
// give up instead of waiting for it.
func TestLockAheadGivesWayToALocalHolder(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	s := openNode(t, dev, NewMemLocks(), "a", 0)
	if err := s.WriteFile("f", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := s.Stat("f")
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(FileStat).Ino
	// Every free block above f's inode may be asked for: hold them all
	// locally, as transactions making inodes there would.
	var held []*glock
	for b := ino + 1; b < ino+1+2*inodeLockAhead+8 && b < s.sb.Blocks; b++ {
		g := s.glockFor(classInode, b)
		g.rw.Lock()
		held = append(held, g)
	}
	s.lockAhead(ino)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		for _, g := range held {
			g.rw.Unlock()
		}
		<-closed
		t.Fatal("Close waited for a lock asked for ahead while a local user held it")
	}
	for _, g := range held {
		g.rw.Unlock()
	}
}

// Directories made apart each get a region (a 256-block aligned run) of
// their own, wholly free when taken, from the top of the node's group
// down; plain allocations keep filling from the bottom.
func TestMkdirApartTakesAFreeRegionEach(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{AGBlocks: 2048})
	lm := NewMemLocks()
	s := openNode(t, dev, lm, "a", 0)
	if err := s.MkdirAll("web/keys", 0o755); err != nil {
		t.Fatal(err)
	}
	regions := map[uint64]string{}
	for i := range 4 {
		name := fmt.Sprintf("web/keys/%d", i)
		if err := s.MkdirApart(name, 0o755); err != nil {
			t.Fatal(err)
		}
		fi, err := s.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		ino := fi.Sys().(FileStat).Ino
		if ino%apartBlocks != 0 {
			t.Fatalf("%s: inode %d does not start a region", name, ino)
		}
		if other, ok := regions[ino/apartBlocks]; ok {
			t.Fatalf("%s shares region %d with %s", name, ino/apartBlocks, other)
		}
		regions[ino/apartBlocks] = name
		ag, start := s.sb.agOf(ino)
		if ag != s.agOrder[0] || ino == start {
			t.Fatalf("%s: inode %d in group %d (start %d), want inside this node's group %d", name, ino, ag, start, s.agOrder[0])
		}
	}
	if err := s.MkdirApart("web/keys/0", 0o755); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("made again: %v, want fs.ErrExist", err)
	}
	// Files made in them go where this node allocates, not into the
	// directories' regions.
	for i := range 4 {
		name := fmt.Sprintf("web/keys/%d/f", i)
		if err := s.WriteFile(name, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		fi, err := s.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if r := fi.Sys().(FileStat).Ino / apartBlocks; regions[r] != "" {
			t.Fatalf("%s: inode in the region of %s", name, regions[r])
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, dev)
}

// TestAllocFindsAFreedBlockInAFullGroup: with every group full, a block
// freed between full stretches of the bitmap (which the allocator passes
// over a word at a time) is found and handed out again, and the free
// counts stay true to the bitmaps.
func TestAllocFindsAFreedBlockInAFullGroup(t *testing.T) {
	dev := newMem(t, 2048, FormatOptions{AGBlocks: 512})
	s := openNode(t, dev, NewMemLocks(), "a", 0)
	mkdirs(t, s, "d")
	var files []string
	for i := 0; ; i++ {
		name := fmt.Sprintf("d/f%d", i)
		err := s.WriteFile(name, make([]byte, BlockSize), 0o644)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
		if i > 4096 {
			t.Fatal("no ErrNoSpace after more files than the store has blocks")
		}
	}
	st, err := s.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	// A block may be left that a file of one data block and a new inode
	// cannot use; a removed file gives two back.
	if st.Free > 2 {
		t.Fatalf("ErrNoSpace after %d files with %d blocks free", len(files), st.Free)
	}
	victim := files[len(files)/2]
	if err := s.Remove(victim); err != nil {
		t.Fatal(err)
	}
	st2, err := s.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	if st2.Free < st.Free+2 {
		t.Fatalf("removing %s freed %d blocks, want at least 2", victim, st2.Free-st.Free)
	}
	if err := s.WriteFile(victim, []byte("again"), 0o644); err != nil {
		t.Fatalf("a file in the blocks of a removed one: %v", err)
	}
	if got, err := s.ReadFile(victim); err != nil || string(got) != "again" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, dev)
}

// TestFullNodeSpreadsIntoFreeGroups: a node whose own allocation group is
// full allocates in a free group, not in the group another node is
// allocating in (whose lock would go back and forth between the two),
// even where that group comes next in its order and in lock order; and
// the other node keeps its group to itself.
func TestFullNodeSpreadsIntoFreeGroups(t *testing.T) {
	dev := newMem(t, 2304, FormatOptions{AGBlocks: 256}) // 4 groups of 256 blocks
	lm := NewMemLocks()
	b := openNode(t, dev, lm, "b", 1) // groups in order 1, 3, 2, 0
	d := openNode(t, dev, lm, "d", 3) // groups in order 3, 1, 0, 2
	if got := int(b.sb.AGCount); got != 4 {
		t.Fatalf("%d allocation groups, want 4", got)
	}
	mkdirs(t, b, "b")
	mkdirs(t, d, "d")
	groupOf := func(s *Store, name string) int {
		t.Helper()
		fi, err := s.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		return int((fi.Sys().(FileStat).Ino - s.sb.AGStart) / uint64(s.sb.AGBlocks))
	}
	create := func(s *Store, name string) {
		t.Helper()
		f, err := s.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(name)); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	perGroup := map[int]int{}
	for i := 0; perGroup[0]+perGroup[2] == 0; i++ {
		if i > 400 {
			t.Fatalf("node b's files by group after %d: %v; want some beyond its home, 1", i, perGroup)
		}
		// Node d allocates in its home group between node b's files
		// (fewer: its group is to have room to the end).
		if i%4 == 0 {
			dn := fmt.Sprintf("d/f%d", i)
			create(d, dn)
			if g := groupOf(d, dn); g != 3 {
				t.Fatalf("node d's %s went to group %d; its home, 3, has room and is nobody else's", dn, g)
			}
		}
		bn := fmt.Sprintf("b/f%d", i)
		create(b, bn)
		g := groupOf(b, bn)
		perGroup[g]++
		if g == 3 {
			t.Fatalf("node b's %s went to group 3, where node d allocates, with groups 2 and 0 free (b's files by group: %v)", bn, perGroup)
		}
	}
	for k := 0; k < 20; k++ {
		create(d, fmt.Sprintf("d/g%d", k))
		create(b, fmt.Sprintf("b/g%d", k))
		if g := groupOf(b, fmt.Sprintf("b/g%d", k)); g == 3 {
			t.Fatalf("node b's b/g%d went to group 3, where node d allocates", k)
		}
	}
	b.Close()
	d.Close()
	checkClean(t, dev)
}

// TestShortBitmapIsCorruptNotACrash: an allocation group header that is
// well formed (checksum and all) but whose bitmap is short of its
// group's blocks is passed by: allocations go to the other groups, and
// fail with ErrCorrupt naming a group only when every group is damaged;
// nothing panics.
func TestShortBitmapIsCorruptNotACrash(t *testing.T) {
	dev := newMem(t, 2304, FormatOptions{AGBlocks: 256}) // 4 groups of 256 blocks
	sb, err := ReadSuperblock(context.Background(), dev)
	if err != nil {
		t.Fatal(err)
	}
	shorten := func(ag int) {
		t.Helper()
		start, _ := sb.agRange(ag)
		b := make([]byte, BlockSize)
		if err := dev.ReadAt(context.Background(), b, int64(start)*BlockSize); err != nil {
			t.Fatal(err)
		}
		h, err := decodeAGHeader(b, start)
		if err != nil {
			t.Fatal(err)
		}
		h.Bitmap = h.Bitmap[:3]
		if err := dev.WriteAt(context.Background(), h.encode(start), int64(start)*BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	// Groups 1 and 3: slot 1's home and its second.
	shorten(1)
	shorten(3)
	lm := NewMemLocks()
	b := openNode(t, dev, lm, "b", 1)
	if err := b.WriteFile("x", []byte("x"), 0o644); err != nil {
		t.Fatalf("a create on slot 1, groups 0 and 2 whole: %v", err)
	}
	fi, err := b.Stat("x")
	if err != nil {
		t.Fatal(err)
	}
	if ag := int((fi.Sys().(FileStat).Ino - sb.AGStart) / uint64(sb.AGBlocks)); ag != 0 && ag != 2 {
		t.Fatalf("x's inode is in group %d, a damaged one", ag)
	}
	a := openNode(t, dev, lm, "a", 0)
	if err := a.WriteFile("y", []byte("y"), 0o644); err != nil {
		t.Fatalf("a create on slot 0, whose group is whole: %v", err)
	}
	if got, err := b.ReadFile("y"); err != nil || string(got) != "y" {
		t.Fatalf("node b reads y: %q, %v", got, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Every group damaged: the create fails, naming the damage.
	shorten(0)
	shorten(2)
	c := openNode(t, dev, lm, "c", 2)
	err = c.WriteFile("z", []byte("z"), 0o644)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "allocation group") {
		t.Fatalf("a create with every group damaged: %v, want ErrCorrupt naming an allocation group", err)
	}
	if got, err := c.ReadFile("x"); err != nil || string(got) != "x" {
		t.Fatalf("node c reads x: %q, %v", got, err)
	}
}
