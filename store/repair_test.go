package store

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// repairFixture is a populated store on an in-memory device, closed, with
// what every file holds and where its inode is.
type repairFixture struct {
	mem   *blockdev.Mem
	sb    *Superblock
	files map[string]string // path -> contents
	ino   map[string]uint64 // path (files and directories) -> inode
}

func pattern(n int, seed byte) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/4096)
	}
	return string(b)
}

// fragBlocks is the size of the fixture's fragmented file: every other
// block rewritten gives it more extents than an inode holds.
const fragBlocks = inlineExtents + 24

var (
	repairRounds = flag.Int("store.repairrounds", 20, "rounds of random metadata damage repaired")
	repairSeed   = flag.Uint64("store.repairseed", 13, "seed of the random metadata damage")
)

func newRepairFixture(t testing.TB) *repairFixture {
	t.Helper()
	ctx := context.Background()
	mem := newMem(t, 2048, FormatOptions{Slots: 2, JournalBlocks: 64, AGBlocks: 512, Align: 1})
	s := openNode(t, mem, NewMemLocks(), "w", 0)
	f := &repairFixture{mem: mem, files: map[string]string{}, ino: map[string]uint64{}}
	for _, d := range []string{"site", "site/img", "data", "deep", "deep/a", "deep/a/b"} {
		if err := s.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	put := func(p, data string) {
		if err := s.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		f.files[p] = data
	}
	put("site/index.html", "<h1>hello</h1>")
	put("site/img/logo.png", pattern(5*BlockSize+123, 1))
	put("site/about.html", pattern(2*BlockSize, 2))
	put("data/a", pattern(3*BlockSize, 3))
	put("data/b", pattern(3*BlockSize, 4))
	put("deep/a/b/leaf.txt", "deep leaf")
	put("deep/a/note", pattern(BlockSize+1, 5))
	for i := 0; i < 40; i++ {
		put(fmt.Sprintf("data/many%02d", i), pattern(100+i*37, byte(i)))
	}
	// A fragmented file: every other block rewritten, so its extents
	// overflow into a chain of extent blocks.
	frag := []byte(pattern(fragBlocks*BlockSize, 6))
	put("data/frag", string(frag))
	fh, err := s.OpenFile("data/frag", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < fragBlocks; b += 2 {
		p := []byte(pattern(BlockSize, byte(b)))
		if _, err := fh.WriteAt(p, int64(b)*BlockSize); err != nil {
			t.Fatal(err)
		}
		copy(frag[b*BlockSize:], p)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	f.files["data/frag"] = string(frag)
	_ = fs.WalkDir(s, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, err := d.Info()
		if err != nil {
			t.Fatal(err)
		}
		f.ino[p] = fi.Sys().(FileStat).Ino
		return nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sb, err := ReadSuperblock(ctx, mem)
	if err != nil {
		t.Fatal(err)
	}
	f.sb = sb
	if in := f.inode(t, f.ino["data/frag"]); in.Layout != layoutOverflow {
		t.Fatalf("data/frag has layout %d, want its extents in a chain", in.Layout)
	}
	checkClean(t, mem)
	return f
}

func (f *repairFixture) block(blk uint64) []byte   { return f.mem.Peek(int64(blk)*BlockSize, BlockSize) }
func (f *repairFixture) poke(blk uint64, b []byte) { f.mem.Poke(int64(blk)*BlockSize, b) }

// flip damages block blk so that its checksum fails.
func (f *repairFixture) flip(blk uint64) {
	b := f.block(blk)
	b[200] ^= 0x5a
	f.poke(blk, b)
}

func (f *repairFixture) inode(t testing.TB, ino uint64) *inode {
	t.Helper()
	in, err := decodeInode(f.block(ino), ino)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (f *repairFixture) setInode(in *inode) { f.poke(in.Ino, in.encode()) }

// leafWith finds the leaf of directory dir holding name.
func (f *repairFixture) leafWith(t testing.TB, dir, name string) (uint64, *dirLeaf, *inode) {
	t.Helper()
	d := f.inode(t, f.ino[dir])
	for blk := d.Buckets[bucketOf(name)]; blk != 0; {
		l, _, err := decodeDirLeaf(f.block(blk), blk)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range l.Entries {
			if e.Name == name {
				return blk, l, d
			}
		}
		blk = l.Next
	}
	t.Fatalf("%s has no entry %q", dir, name)
	return 0, nil, nil
}

// editEntry changes the entry name of dir (fn returns false to drop it).
func (f *repairFixture) editEntry(t testing.TB, dir, name string, fn func(e *dirEntry) bool) {
	blk, l, d := f.leafWith(t, dir, name)
	var out []dirEntry
	for _, e := range l.Entries {
		if e.Name == name && !fn(&e) {
			continue
		}
		out = append(out, e)
	}
	l.Entries = out
	f.poke(blk, l.encode(blk, d.Ino, d.Gen))
}

func (f *repairFixture) editAG(t testing.TB, blk uint64, fn func(h *agHeader, i uint32)) {
	ag, start := f.sb.agOf(blk)
	h, err := decodeAGHeader(f.block(start), start)
	if err != nil {
		t.Fatal(err)
	}
	_ = ag
	fn(h, uint32(blk-start))
	f.poke(start, h.encode(start))
}

// firstData is the first data block of file p.
func (f *repairFixture) firstData(t testing.TB, p string) uint64 {
	in := f.inode(t, f.ino[p])
	if len(in.Extents) == 0 {
		t.Fatalf("%s has no extents", p)
	}
	return in.Extents[0].Disk
}

// treeAfter opens the repaired store and returns its tree.
func (f *repairFixture) treeAfter(t testing.TB, dev blockdev.Device) map[string]string {
	t.Helper()
	s, err := OpenReadOnly(context.Background(), dev, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return treeOf(t, s)
}

// expect checks the repaired tree: every file holds what it held, at its
// path or the one moved gives; files under gone (damaged ones) are not
// looked at.
func (f *repairFixture) expect(t testing.TB, dev blockdev.Device, gone []string, moved map[string]string) {
	t.Helper()
	tree := f.treeAfter(t, dev)
	lost := map[string]bool{}
	for _, p := range gone {
		lost[p] = true
	}
	for p, want := range f.files {
		if np, ok := moved[p]; ok {
			p = np
		} else if lost[p] || underAny(p, gone) {
			continue
		}
		if got, ok := tree[p]; !ok {
			t.Errorf("%s missing after repair", p)
		} else if got != want {
			t.Errorf("%s: %d bytes after repair, want %d (contents differ)", p, len(got), len(want))
		}
	}
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// repairClean repairs dev and fails unless the repair changed something,
// a check after it is clean, and a second repair changes nothing.
func repairClean(t testing.TB, dev *blockdev.Mem) *RepairReport {
	t.Helper()
	ctx := context.Background()
	rep, err := Repair(ctx, dev, RepairOptions{Slot: -1})
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	for _, p := range rep.Repairs {
		t.Logf("repaired: %s", p)
	}
	if !rep.Repaired() {
		t.Fatal("repair found nothing to do")
	}
	if len(rep.Left) > 0 {
		t.Fatalf("left after repair: %v", rep.Left)
	}
	checkClean(t, dev)
	before := dev.Peek(0, dev.Size())
	again, err := Repair(ctx, dev, RepairOptions{Slot: -1})
	if err != nil {
		t.Fatalf("second repair: %v", err)
	}
	if again.Repaired() || len(again.Left) > 0 {
		t.Fatalf("second repair changed %v, left %v", again.Repairs, again.Left)
	}
	if !bytes.Equal(before, dev.Peek(0, dev.Size())) {
		t.Fatal("second repair wrote to the device")
	}
	return rep
}

func mentions(rep *RepairReport, ino uint64, path, what string) bool {
	for _, p := range rep.Repairs {
		if (ino == 0 || p.Ino == ino) && (path == "" || p.Path == path) && strings.Contains(p.What, what) {
			return true
		}
	}
	return false
}

// damage is one kind of damage done to a fixture on purpose, and what the
// repaired tree looks like.
type damage struct {
	name  string
	do    func(t testing.TB, f *repairFixture)
	gone  []string                                        // files (or directories) lost with it
	moved func(f *repairFixture) map[string]string        // files found elsewhere after the repair
	says  func(f *repairFixture) (uint64, string, string) // a repair that must be printed: inode, path, words
}

func damages() []damage {
	lostAs := func(p string, files ...string) func(f *repairFixture) map[string]string {
		return func(f *repairFixture) map[string]string {
			m := map[string]string{}
			for _, fp := range files {
				m[fp] = fmt.Sprintf("lost+found/#%d%s", f.ino[p], strings.TrimPrefix(fp, p))
			}
			return m
		}
	}
	return []damage{
		{name: "leaked block", do: func(t testing.TB, f *repairFixture) {
			blk := f.sb.Blocks - 3
			f.editAG(t, blk, func(h *agHeader, i uint32) { bitSet(h.Bitmap, i); h.Free-- })
		}, says: func(f *repairFixture) (uint64, string, string) { return 0, "", "leaked" }},
		{name: "used block marked free", do: func(t testing.TB, f *repairFixture) {
			f.editAG(t, f.firstData(t, "data/a"), func(h *agHeader, i uint32) { bitClear(h.Bitmap, i); h.Free++ })
		}, says: func(f *repairFixture) (uint64, string, string) {
			return f.ino["data/a"], "/data/a", "marked free: marked used"
		}},
		{name: "free count wrong", do: func(t testing.TB, f *repairFixture) {
			f.editAG(t, f.sb.Root, func(h *agHeader, i uint32) { h.Free += 7 })
		}, says: func(f *repairFixture) (uint64, string, string) { return 0, "", "free blocks" }},
		{name: "block used by two files", do: func(t testing.TB, f *repairFixture) {
			in := f.inode(t, f.ino["data/b"])
			in.Extents[0].Disk = f.firstData(t, "data/a")
			f.setInode(in)
		}, gone: []string{"data/b"}, says: func(f *repairFixture) (uint64, string, string) {
			return f.ino["data/b"], "/data/b", "gets a copy"
		}},
		{name: "entry to a missing inode", do: func(t testing.TB, f *repairFixture) {
			f.editEntry(t, "data", "many03", func(e *dirEntry) bool { e.Ino = f.sb.Blocks - 5; return true })
		}, gone: []string{"data/many03"}, moved: lostAs("data/many03", "data/many03"),
			says: func(f *repairFixture) (uint64, string, string) {
				return f.sb.Blocks - 5, "/data/many03", "removed: inode unreadable"
			}},
		{name: "entry of the wrong generation", do: func(t testing.TB, f *repairFixture) {
			f.editEntry(t, "site", "about.html", func(e *dirEntry) bool { e.Gen += 9; return true })
		}, moved: lostAs("site/about.html", "site/about.html"),
			says: func(f *repairFixture) (uint64, string, string) {
				return f.ino["site/about.html"], "/site/about.html", "generation"
			}},
		{name: "link count", do: func(t testing.TB, f *repairFixture) {
			in := f.inode(t, f.ino["site/index.html"])
			in.Nlink = 3
			f.setInode(in)
		}, says: func(f *repairFixture) (uint64, string, string) {
			return f.ino["site/index.html"], "/site/index.html", "links"
		}},
		{name: "orphan file", do: func(t testing.TB, f *repairFixture) {
			f.editEntry(t, "data", "many07", func(e *dirEntry) bool { return false })
			d := f.inode(t, f.ino["data"])
			d.Entries--
			f.setInode(d)
		}, moved: lostAs("data/many07", "data/many07"),
			says: func(f *repairFixture) (uint64, string, string) { return f.ino["data/many07"], "", "orphan" }},
		{name: "orphan directory", do: func(t testing.TB, f *repairFixture) {
			f.editEntry(t, "deep", "a", func(e *dirEntry) bool { return false })
			d := f.inode(t, f.ino["deep"])
			d.Entries--
			f.setInode(d)
		}, moved: lostAs("deep/a", "deep/a/note", "deep/a/b/leaf.txt"),
			says: func(f *repairFixture) (uint64, string, string) { return f.ino["deep/a"], "", "orphan" }},
		{name: "file inode bad checksum", do: func(t testing.TB, f *repairFixture) {
			f.flip(f.ino["site/img/logo.png"])
		}, gone: []string{"site/img/logo.png"}, says: func(f *repairFixture) (uint64, string, string) {
			return f.ino["site/img/logo.png"], "/site/img/logo.png", "checksum"
		}},
		{name: "directory inode bad checksum", do: func(t testing.TB, f *repairFixture) {
			f.flip(f.ino["deep/a"])
		}, gone: []string{"deep/a"}, moved: func(f *repairFixture) map[string]string {
			return map[string]string{"deep/a/note": fmt.Sprintf("lost+found/#%d", f.ino["deep/a/note"]),
				"deep/a/b/leaf.txt": fmt.Sprintf("lost+found/#%d/leaf.txt", f.ino["deep/a/b"])}
		}, says: func(f *repairFixture) (uint64, string, string) { return f.ino["deep/a"], "/deep/a", "checksum" }},
		{name: "directory leaf bad checksum", do: func(t testing.TB, f *repairFixture) {
			blk, _, _ := f.leafWith(t, "site", "index.html")
			f.flip(blk)
		}, moved: lostAs("site/index.html", "site/index.html"),
			says: func(f *repairFixture) (uint64, string, string) { return f.ino["site"], "/site", "chain of bucket" }},
		{name: "extent block bad checksum", do: func(t testing.TB, f *repairFixture) {
			in := f.inode(t, f.ino["data/frag"])
			f.flip(in.ExtBlk)
		}, gone: []string{"data/frag"}, says: func(f *repairFixture) (uint64, string, string) {
			return f.ino["data/frag"], "/data/frag", "extent block"
		}},
		{name: "allocation group header bad checksum", do: func(t testing.TB, f *repairFixture) {
			_, start := f.sb.agOf(f.ino["data"])
			f.flip(start)
		}, says: func(f *repairFixture) (uint64, string, string) { return 0, "", "rebuilt" }},
		{name: "allocation group header of the wrong size", do: func(t testing.TB, f *repairFixture) {
			// Well formed, checksum and all, but its bitmap is short
			// of the group's blocks.
			f.editAG(t, f.ino["data"], func(h *agHeader, i uint32) { h.Bitmap = h.Bitmap[:0] })
		}, says: func(f *repairFixture) (uint64, string, string) { return 0, "", "rebuilt" }},
		{name: "root inode bad checksum", do: func(t testing.TB, f *repairFixture) {
			f.flip(f.sb.Root)
		}, moved: func(f *repairFixture) map[string]string {
			m := map[string]string{}
			for p := range f.files {
				top, rest, _ := strings.Cut(p, "/")
				m[p] = fmt.Sprintf("lost+found/#%d/%s", f.ino[top], rest)
			}
			return m
		}, says: func(f *repairFixture) (uint64, string, string) { return f.sb.Root, "/", "root" }},
		{name: "journal headers bad checksum", do: func(t testing.TB, f *repairFixture) {
			f.flip(f.sb.journalStart(1))
			f.flip(f.sb.journalStart(1) + 1)
		}, says: func(f *repairFixture) (uint64, string, string) { return 0, "", "emptied" }},
	}
}

// TestRepairEachDamage damages a populated store one way at a time,
// repairs it, and wants a clean check, the undamaged files whole, the
// repair printed with its inode and path, and a second repair that does
// nothing.
func TestRepairEachDamage(t *testing.T) {
	for _, d := range damages() {
		t.Run(strings.ReplaceAll(d.name, " ", "_"), func(t *testing.T) {
			f := newRepairFixture(t)
			d.do(t, f)
			rep, err := CheckDevice(context.Background(), f.mem)
			if err != nil || len(rep.Problems) == 0 {
				t.Fatalf("check after the damage: %v, %v", err, rep)
			}
			rr := repairClean(t, f.mem)
			var moved map[string]string
			if d.moved != nil {
				moved = d.moved(f)
			}
			f.expect(t, f.mem, d.gone, moved)
			if ino, p, what := d.says(f); !mentions(rr, ino, p, what) {
				t.Errorf("no repair names inode %d path %q with %q", ino, p, what)
			}
		})
	}
}

// TestRepairCombined: every kind of damage at once (that does not make
// the others moot), repaired in one run.
func TestRepairCombined(t *testing.T) {
	f := newRepairFixture(t)
	moved := map[string]string{}
	var gone []string
	for _, d := range damages() {
		switch d.name {
		case "root inode bad checksum", "directory inode bad checksum", "orphan directory":
			continue // they move the others
		case "allocation group header of the wrong size":
			continue // the same header as the bad checksum's
		}
		d.do(t, f)
		gone = append(gone, d.gone...)
		if d.moved != nil {
			for k, v := range d.moved(f) {
				moved[k] = v
			}
		}
	}
	repairClean(t, f.mem)
	f.expect(t, f.mem, gone, moved)
}

// TestRepairReplaysJournal: a node that crashed with transactions in its
// journal not yet in place; the repair replays them first and keeps its
// records pending for the node's handlers.
func TestRepairReplaysJournal(t *testing.T) {
	ctx := context.Background()
	f := newRepairFixture(t)
	dev := &hookDev{Mem: f.mem}
	s := openNode(t, dev, NewMemLocks(), "n", 1)
	var crashed *blockdev.Mem
	dev.after = func() {
		if crashed == nil && s.jr.lastSeq > s.jr.checkpointed.Load() {
			crashed = f.mem.CrashClone(blockdev.CrashOptions{KeepProbability: 1})
		}
	}
	err := s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.Log("web.intent", []byte("k1")); err != nil {
			return err
		}
		return tx.WriteFile("site/new.html", []byte("new page"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFile("site/second.html", []byte("second"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev.after = nil
	s.Close()
	if crashed == nil {
		t.Fatal("no crash point with the journal ahead of the tree")
	}
	before, err := CheckDevice(ctx, crashed)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.SlotsDirty) == 0 {
		t.Fatal("journal not dirty at the crash point")
	}
	rep, err := Repair(ctx, crashed, RepairOptions{Slot: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repairs %v notes %v", rep.Repairs, rep.Notes)
	if len(rep.Replayed) != 1 || rep.Replayed[0].Slot != 1 || rep.Slot != 0 || len(rep.Left) > 0 {
		t.Fatalf("replayed %+v slot %d left %v", rep.Replayed, rep.Slot, rep.Left)
	}
	if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "slot 1 holds 1 records") {
		t.Fatalf("notes %q", rep.Notes)
	}
	f.files["site/new.html"] = "new page"
	f.expect(t, crashed, nil, nil)
	// The node opening its slot gets the record.
	var got []Record
	cfg := DefaultConfig(crashed, 1, NewMemLocks().Node("n"))
	cfg.Handlers = map[string]Handler{"web.intent": func(ctx context.Context, tx *Tx, rec Record) error {
		got = append(got, rec)
		return nil
	}}
	s2, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if len(got) != 1 || string(got[0].Payload) != "k1" {
		t.Fatalf("records handed over after the repair: %+v", got)
	}
	checkClean(t, crashed)
}

// TestRepairCrashEveryWrite: a repair cut by a power loss after every
// single device write (unflushed writes dropped, kept or torn) and run
// again ends clean, with the undamaged files whole: for the combined
// damage, and for a lost root (every file relinked through lost+found).
func TestRepairCrashEveryWrite(t *testing.T) {
	sets := map[string]func(name string) bool{
		"combined": func(name string) bool {
			switch name {
			case "root inode bad checksum", "directory inode bad checksum", "orphan directory", "journal headers bad checksum",
				"allocation group header of the wrong size": // the same header as the bad checksum's
				return false
			}
			return true
		},
		"root": func(name string) bool { return name == "root inode bad checksum" },
	}
	for set, use := range sets {
		t.Run(set, func(t *testing.T) { repairCrashEveryWrite(t, use) })
	}
}

func repairCrashEveryWrite(t *testing.T, use func(name string) bool) {
	ctx := context.Background()
	f := newRepairFixture(t)
	moved := map[string]string{}
	var gone []string
	for _, d := range damages() {
		if !use(d.name) {
			continue
		}
		d.do(t, f)
		gone = append(gone, d.gone...)
		if d.moved != nil {
			for k, v := range d.moved(f) {
				moved[k] = v
			}
		}
	}
	dev := &hookDev{Mem: f.mem}
	flavours := []blockdev.CrashOptions{{KeepProbability: 0}, {KeepProbability: 1}, {KeepProbability: 0.5}}
	writes, points := 0, 0
	dev.after = func() {
		writes++
		if t.Failed() {
			return
		}
		for i, fl := range flavours {
			if i == 2 && writes%3 != 0 {
				continue
			}
			fl.Seed = uint64(writes)
			clone := f.mem.CrashClone(fl)
			points++
			rep, err := Repair(ctx, clone, RepairOptions{Slot: -1})
			if err != nil || len(rep.Left) > 0 {
				t.Errorf("write %d, crash %+v: repair again: %v, left %v", writes, fl, err, rep.Left)
				return
			}
			f.expect(t, clone, gone, moved)
		}
	}
	rep, err := Repair(ctx, dev, RepairOptions{Slot: -1})
	dev.after = nil
	if err != nil || len(rep.Left) > 0 {
		t.Fatalf("repair: %v, left %v", err, rep.Left)
	}
	f.expect(t, f.mem, gone, moved)
	t.Logf("%d device writes, %d crash points repaired again", writes, points)
}

// TestRepairRandomDamage damages random metadata blocks at random (bytes
// flipped, blocks zeroed, fields of valid blocks changed); the repair
// never panics and ends with a clean check, or says clearly why not.
func TestRepairRandomDamage(t *testing.T) {
	ctx := context.Background()
	base := newRepairFixture(t)
	var meta []uint64
	for blk := uint64(0); blk < base.sb.Blocks; blk++ {
		if _, err := openBlock(base.block(blk), blk, 0); err == nil {
			meta = append(meta, blk)
		}
	}
	rounds := *repairRounds
	if testing.Short() {
		rounds = min(rounds, 10)
	}
	rng := rand.New(rand.NewPCG(*repairSeed, 14))
	repaired := 0
	defer func() { t.Logf("%d rounds, %d repairs", rounds, repaired) }()
	for round := 0; round < rounds; round++ {
		mem := base.mem.CrashClone(blockdev.CrashOptions{KeepProbability: 1})
		n := 1 + rng.IntN(6)
		var what []string
		for i := 0; i < n; i++ {
			blk := meta[rng.IntN(len(meta))]
			b := mem.Peek(int64(blk)*BlockSize, BlockSize)
			switch rng.IntN(4) {
			case 0: // a byte flipped: bad checksum
				b[rng.IntN(BlockSize)] ^= byte(1 + rng.IntN(255))
			case 1: // zeroed
				clear(b)
			case 2: // a field changed under a good checksum
				off := headerSize + rng.IntN(64)
				b[off] ^= byte(1 + rng.IntN(255))
				h, _ := openBlock(base.block(blk), blk, 0)
				sealBlock(b, h)
			case 3: // another block's contents
				copy(b, base.block(meta[rng.IntN(len(meta))]))
			}
			mem.Poke(int64(blk)*BlockSize, b)
			what = append(what, fmt.Sprint(blk))
		}
		rep, err := Repair(ctx, mem, RepairOptions{Slot: -1})
		if err != nil {
			if !errors.Is(err, ErrNotStore) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNoSpace) {
				t.Fatalf("round %d (blocks %v): repair failed unclearly: %v", round, what, err)
			}
			t.Logf("round %d (blocks %v): %v", round, what, err)
			continue
		}
		if len(rep.Left) > 0 {
			t.Fatalf("round %d (blocks %v): left after repair: %v (repairs %v)", round, what, rep.Left, rep.Repairs)
		}
		checkClean(t, mem)
		repaired += len(rep.Repairs)
		again, err := Repair(ctx, mem, RepairOptions{Slot: -1})
		if err != nil || again.Repaired() {
			t.Fatalf("round %d (blocks %v): second repair: %v %v", round, what, err, again.Repairs)
		}
	}
}

// TestRepairThroughMirror: on a mirrored volume, an inode damaged on one
// leg is rewritten from the other (and said so), one damaged on both
// legs is cleared; the repair writes every leg, so both legs hold the
// same store afterwards and the check is clean.
func TestRepairThroughMirror(t *testing.T) {
	ctx := context.Background()
	vol, legs := newMirrorStore(t)
	s := openNode(t, vol, NewMemLocks(), "a", 0)
	files := map[string]string{"site/a.html": pattern(3*BlockSize, 1), "site/b.html": "bbb", "site/c.html": pattern(100, 2)}
	if err := s.MkdirAll("site", 0o755); err != nil {
		t.Fatal(err)
	}
	ino := map[string]uint64{}
	for p, data := range files {
		if err := s.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		fi, err := s.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		ino[p] = fi.Sys().(FileStat).Ino
	}
	sb := s.Superblock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	msb, err := mirror.ReadSuperblock(ctx, legs[0])
	if err != nil {
		t.Fatal(err)
	}
	at := func(blk uint64) int64 { return msb.Geometry.DataOffset + int64(blk)*BlockSize }
	damage := func(leg int, blk uint64) {
		b := legs[leg].Peek(at(blk), BlockSize)
		b[300] ^= 0x77
		legs[leg].Poke(at(blk), b)
	}
	damage(0, ino["site/b.html"])
	damage(1, ino["site/b.html"])
	damage(1, ino["site/a.html"])
	rep, err := Repair(ctx, vol, RepairOptions{Slot: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Repairs {
		t.Logf("repaired: %s", p)
	}
	if len(rep.Left) > 0 {
		t.Fatalf("left: %v", rep.Left)
	}
	if !mentions(rep, ino["site/a.html"], "/site/a.html", "damaged on 1 of 2 copies") ||
		!mentions(rep, ino["site/b.html"], "/site/b.html", "removed: inode unreadable") {
		t.Fatalf("repairs do not name the damaged inodes: %v", rep.Repairs)
	}
	n := int64(sb.Blocks) * BlockSize
	if !bytes.Equal(legs[0].Peek(msb.Geometry.DataOffset, n), legs[1].Peek(msb.Geometry.DataOffset, n)) {
		t.Fatal("the legs differ after the repair")
	}
	checkClean(t, vol)
	ro, err := OpenReadOnly(ctx, vol, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for _, p := range []string{"site/a.html", "site/c.html"} {
		if got, err := ro.ReadFile(p); err != nil || string(got) != files[p] {
			t.Fatalf("%s after the repair: %v", p, err)
		}
	}
	if _, err := ro.Stat("site/b.html"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("site/b.html after the repair: %v", err)
	}
}

// TestRepairLeafLoop: a directory leaf chain that loops back to a leaf
// whose entries all go is cut, not followed for ever.
func TestRepairLeafLoop(t *testing.T) {
	f := newRepairFixture(t)
	blk, l, d := f.leafWith(t, "site", "about.html")
	for i := range l.Entries {
		l.Entries[i].Gen += 5 // every entry of the leaf is wrong
	}
	l.Next = blk
	f.poke(blk, l.encode(blk, d.Ino, d.Gen))
	rep := repairClean(t, f.mem)
	if !mentions(rep, d.Ino, "/site", "loops") {
		t.Fatalf("no repair says the chain loops: %v", rep.Repairs)
	}
}
