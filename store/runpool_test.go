package store

import (
	"bytes"
	"os"
	"testing"
)

// Commits of large writes assemble their data in recycled buffers
// (Tx.runBuffer): a file written after another reads its own bytes only,
// a block written in part reads zeros where it was not written, and a
// small commit (through the journal) keeps its bytes after large ones
// reused buffers.
func TestLargeWritesReuseBuffers(t *testing.T) {
	dev := newMem(t, 8192, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0, func(c *Config) { c.WriteBuffer = 256 << 10 })
	fill := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

	// A file of 1 MiB of 0xaa, in four commits of 256 KiB.
	first := fill(0xaa, 1<<20)
	if err := a.WriteFile("first", first, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := a.OpenFile("big", os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < 1<<20; off += 64 << 10 {
		if _, err := f.Write(fill(0xaa, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A small file: its data goes through the journal, kept in memory
	// until the checkpoint.
	if err := a.WriteFile("small", []byte("small file"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Another file: 40 blocks, of which block 5 is written in its first
	// 10 bytes only and blocks 20-21 not at all (a hole), then the last
	// block in part. Its commit takes a buffer the one above used.
	g, err := a.OpenFile("second", os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 40*BlockSize+100)
	write := func(off int, p []byte) {
		t.Helper()
		if _, err := g.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	write(0, fill(0x11, 5*BlockSize))
	write(5*BlockSize, fill(0x22, 10))
	write(6*BlockSize, fill(0x33, 14*BlockSize))
	write(22*BlockSize, fill(0x44, 18*BlockSize+100))
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}

	for name, w := range map[string][]byte{"first": first, "big": first, "second": want, "small": []byte("small file")} {
		got, err := a.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			i := 0
			for i < min(len(got), len(w)) && got[i] == w[i] {
				i++
			}
			t.Fatalf("%s: %d bytes, want %d; first difference at byte %d", name, len(got), len(w), i)
		}
	}
	// And from the device, as another node reads it.
	b := openNode(t, dev, lm, "b", 1)
	if got, err := b.ReadFile("second"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("second read by another node: %d bytes, %v", len(got), err)
	}
	a.Close()
	b.Close()
	checkClean(t, dev)
}
