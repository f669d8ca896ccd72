package iscsi_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/shoal-ha/shoal/fixtures/tgtrig"
)

func TestReadWriteMatchesBackingFile(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":rw")
	img := tgt.MustAddLUN(t, 1, 32<<20)
	d := openDevice(t, testConfig(t, tgt, 1))
	ctx := testCtx(t)
	if d.Size() != 32<<20 || d.BlockSize() != 512 {
		t.Fatalf("size %d block %d, want %d and 512", d.Size(), d.BlockSize(), 32<<20)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3<<20+4096)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	const off = 1<<20 + 512
	if err := d.WriteAt(ctx, buf, off); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(buf))
	if err := d.ReadAt(ctx, got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, buf) {
		t.Fatal("read back differs from what was written")
	}
	file, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file[off:off+len(buf)], buf) {
		t.Fatal("backing file differs from what was written")
	}
	if !bytes.Equal(file[:off], make([]byte, off)) {
		t.Fatal("bytes before the write changed")
	}
}
