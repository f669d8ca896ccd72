package store

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
)

var crashLong = flag.Bool("store.crashlong", false, "crash enumeration: longer scripts and every crash flavour at every write")

// hookDev calls after once after every write it passes on, and keeps the
// writes not yet flushed.
type hookDev struct {
	*blockdev.Mem
	// mu makes the writes (which a commit sends several at once) one
	// after another, so that after sees the device between two of them.
	mu      sync.Mutex
	after   func()
	pending []pendingWrite
}

type pendingWrite struct {
	off int64
	p   []byte
}

func (d *hookDev) WriteAt(ctx context.Context, p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.Mem.WriteAt(ctx, p, off); err != nil {
		return err
	}
	d.pending = append(d.pending, pendingWrite{off, append([]byte(nil), p...)})
	if d.after != nil {
		d.after()
	}
	return nil
}

func (d *hookDev) Flush(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.Mem.Flush(ctx); err != nil {
		return err
	}
	d.pending = nil
	return nil
}

// crashOp is one scripted operation and what it does to the model.
type crashOp struct {
	name  string
	do    func(s *Store) error
	model func(m map[string]string)
}

func crashScript(long bool) []crashOp {
	pat := func(n int, seed byte) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return string(b)
	}
	write := func(p string, data string) crashOp {
		return crashOp{"write " + p, func(s *Store) error { return s.WriteFile(p, []byte(data), 0o644) },
			func(m map[string]string) { m[p] = data }}
	}
	mkdir := func(p string) crashOp {
		return crashOp{"mkdir " + p, func(s *Store) error { return s.Mkdir(p, 0o755) },
			func(m map[string]string) { m[p+"/"] = "" }}
	}
	rename := func(a, b string) crashOp {
		return crashOp{"rename " + a + " " + b, func(s *Store) error { return s.Rename(a, b) },
			func(m map[string]string) {
				for k, v := range m {
					if k == a || k == a+"/" || strings.HasPrefix(k, a+"/") {
						delete(m, k)
						m[b+strings.TrimPrefix(k, a)] = v
					}
				}
			}}
	}
	remove := func(p string) crashOp {
		return crashOp{"remove " + p, func(s *Store) error { return s.Remove(p) },
			func(m map[string]string) { delete(m, p); delete(m, p+"/") }}
	}
	patch := func(p string, off int, data string) crashOp {
		return crashOp{"patch " + p, func(s *Store) error {
			f, err := s.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			if _, err := f.WriteAt([]byte(data), int64(off)); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}, func(m map[string]string) {
			old := []byte(m[p])
			if len(old) < off+len(data) {
				old = append(old, make([]byte, off+len(data)-len(old))...)
			}
			copy(old[off:], data)
			m[p] = string(old)
		}}
	}
	truncate := func(p string, n int) crashOp {
		return crashOp{"truncate " + p, func(s *Store) error {
			f, err := s.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			if err := f.Truncate(int64(n)); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		}, func(m map[string]string) {
			old := []byte(m[p])
			if len(old) >= n {
				old = old[:n]
			} else {
				old = append(old, make([]byte, n-len(old))...)
			}
			m[p] = string(old)
		}}
	}
	ops := []crashOp{
		mkdir("a"),
		write("a/small", "hello"),
		write("a/big", pat(3*BlockSize+100, 1)),
		patch("a/big", BlockSize-10, pat(30, 9)),
		write("a/tmp", pat(5000, 3)),
		rename("a/tmp", "a/big"),
		mkdir("b"),
		rename("a/small", "b/small"),
		truncate("a/big", 1000),
		truncate("a/big", 6000),
		remove("b/small"),
		rename("a", "b/a"),
		write("b/a/new", pat(200, 5)),
		remove("b/a/new"),
	}
	if long {
		for i := 0; i < 6; i++ {
			ops = append(ops,
				write(fmt.Sprintf("b/f%d", i), pat(i*2500, byte(i))),
				patch(fmt.Sprintf("b/f%d", i), i*100, pat(5000, byte(i+1))),
				rename(fmt.Sprintf("b/f%d", i), "b/a/big"),
				mkdir(fmt.Sprintf("b/d%d", i)),
			)
		}
	}
	return ops
}

func dumpTree(t testing.TB, s *Store) map[string]string {
	m := treeOf(t, s)
	delete(m, "./")
	return m
}

func describe(m map[string]string) string {
	var keys []string
	for k, v := range m {
		keys = append(keys, fmt.Sprintf("%s(%d)", k, len(v)))
	}
	sort.Strings(keys)
	return strings.Join(keys, " ")
}

// TestCrashEveryWrite runs a script of operations and, after every single
// device write, takes what a power loss would leave (unflushed writes
// dropped, kept, or torn), replays it and compares the tree with the
// model after the acknowledged operations (the one in flight may be
// there whole or not at all), with the check clean each time.
func TestCrashEveryWrite(t *testing.T) { crashEveryWrite(t, crashScript(*crashLong), false) }

// TestCrashEveryWriteWithARecordPending is TestCrashEveryWrite with an
// application record logged first and never acknowledged, and a
// checkpoint after every other operation: each checkpoint leaves the
// journal's tail at the record's transaction (the images behind it in
// place) until that span passes half the journal, then carries the record
// forward. After a crash at any write, the reopened slot hands the record
// over exactly once, and the tree is as without it.
func TestCrashEveryWriteWithARecordPending(t *testing.T) {
	var ops []crashOp
	for i, op := range crashScript(*crashLong) {
		ops = append(ops, op)
		if i%2 == 1 {
			ops = append(ops, crashOp{"checkpoint", func(s *Store) error { return s.checkpoint(context.Background()) }, func(map[string]string) {}})
		}
	}
	crashEveryWrite(t, ops, true)
}

// pendingKind is the kind of the record crashEveryWrite keeps pending.
const pendingKind = "pending"

func crashEveryWrite(t *testing.T, ops []crashOp, record bool) {
	mem, err := blockdev.NewMem(512*BlockSize, 512)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Format(ctx, mem, FormatOptions{Slots: 2, JournalBlocks: 48, Align: 1}); err != nil {
		t.Fatal(err)
	}
	models := []map[string]string{{}}
	for _, op := range ops {
		m := map[string]string{}
		for k, v := range models[len(models)-1] {
			m[k] = v
		}
		op.model(m)
		models = append(models, m)
	}
	// Crash flavours: unflushed writes dropped, kept, torn (each 512-byte
	// sector kept at random), and reordered: the device may write what it
	// was given in any order until a flush, so the latest write made it
	// while one earlier unflushed write did not (each in turn), or while
	// none of them did.
	flavours := []blockdev.CrashOptions{{KeepProbability: 0}, {KeepProbability: 1}, {KeepProbability: 0.5}}
	// Reordered flavours (coded as KeepProbability -k): the device may
	// write what it was given in any order until a flush, so the latest k
	// unflushed writes made it and the earlier ones did not.
	reorderMax := 4
	if *crashLong {
		reorderMax = 64
	}
	for k := 1; k <= reorderMax; k++ {
		flavours = append(flavours, blockdev.CrashOptions{KeepProbability: -float64(k)})
	}
	acked := 0
	writes := 0
	points := 0
	dev := &hookDev{Mem: mem}
	var failed bool
	after := func() {
		writes++
		if failed {
			return
		}
		for fi, fl := range flavours {
			if !*crashLong && fi == 2 && writes%3 != 0 {
				continue // torn crashes at every third write in the short run
			}
			fl.Seed = uint64(writes)
			var clone *blockdev.Mem
			if fl.KeepProbability < 0 {
				// Reordered: only the latest k writes made it.
				k := int(-fl.KeepProbability)
				n := len(dev.pending)
				if k >= n {
					continue
				}
				clone = mem.CrashClone(blockdev.CrashOptions{})
				for _, w := range dev.pending[n-k:] {
					clone.Poke(w.off, w.p)
				}
			} else {
				clone = mem.CrashClone(fl)
			}
			points++
			rcfg := DefaultConfig(clone, 0, NewMemLocks().Node("r"))
			if record {
				// Handed over in a transaction that acknowledges it: a
				// second hand-over finds the file.
				rcfg.Handlers = map[string]Handler{pendingKind: func(ctx context.Context, tx *Tx, rec Record) error {
					if _, err := tx.ReadFile("handled"); err == nil {
						return fmt.Errorf("record %d handed over twice", rec.ID)
					}
					return tx.WriteFile("handled", rec.Payload, 0o644)
				}}
			}
			s, err := Open(ctx, rcfg)
			if err != nil {
				t.Errorf("write %d (op %d %s, crash %+v): open: %v", writes, acked, ops[min(acked, len(ops)-1)].name, fl, err)
				failed = true
				return
			}
			got := dumpTree(t, s)
			if record {
				if got["handled"] != "r" {
					t.Errorf("write %d during op %d (%s), crash %+v: the pending record was not handed over (handled = %q)", writes, acked, ops[min(acked, len(ops)-1)].name, fl, got["handled"])
					failed = true
				}
				delete(got, "handled")
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			ok := equalTree(got, models[acked]) || acked+1 < len(models) && equalTree(got, models[acked+1])
			if !ok {
				t.Errorf("write %d during op %d (%s), crash %+v: tree %s\nwant %s\nor   %s", writes, acked, ops[min(acked, len(ops)-1)].name, fl,
					describe(got), describe(models[acked]), describe(models[min(acked+1, len(models)-1)]))
				failed = true
				return
			}
			rep, err := CheckDevice(ctx, clone)
			if err != nil || rep.Err() != nil {
				t.Errorf("write %d during op %d (%s), crash %+v: check: %v %v", writes, acked, ops[min(acked, len(ops)-1)].name, fl, err, rep.Err())
				failed = true
				return
			}
		}
	}
	// Every write comes from the operations (and the Close): no periodic
	// checkpoint writes in the middle of the script's bookkeeping.
	wcfg := DefaultConfig(dev, 0, NewMemLocks().Node("w"))
	wcfg.CheckpointInterval = noPeriodicCheckpoint
	s, err := Open(ctx, wcfg)
	if err != nil {
		t.Fatal(err)
	}
	if record {
		if err := s.Update(ctx, func(tx *Tx) error { _, err := tx.Log(pendingKind, []byte("r")); return err }); err != nil {
			t.Fatal(err)
		}
	}
	dev.mu.Lock()
	dev.after = after
	dev.mu.Unlock()
	for _, op := range ops {
		if err := op.do(s); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		acked++
		if failed {
			break
		}
	}
	if got := dumpTree(t, s); !failed && !equalTree(got, models[len(ops)]) {
		t.Fatalf("final tree %s, want %s", describe(got), describe(models[len(ops)]))
	}
	s.Close()
	t.Logf("%d operations, %d device writes, %d crash points replayed", len(ops), writes, points)
}
