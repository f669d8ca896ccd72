package iscsi_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/internal/testlog"
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

// TestOpenByAddress opens the LUN through blockdev.Open, as the mirror
// opens its legs.
func TestOpenByAddress(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":addr")
	tgt.MustAddLUN(t, 1, 4<<20)
	ctx := testCtx(t)
	dev, err := blockdev.Open(ctx, tgt.URL(1), blockdev.OpenOptions{Logger: testlog.New(t, "iscsi")})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, ok := dev.(blockdev.Reservations); !ok {
		t.Fatal("iSCSI device lacks the reservations ability")
	}
	if dev.Size() != 4<<20 {
		t.Fatalf("size %d", dev.Size())
	}
	if err := dev.WriteAt(ctx, make([]byte, 100), 0); !errors.Is(err, blockdev.ErrUnaligned) {
		t.Fatalf("unaligned write: %v", err)
	}
	if err := dev.ReadAt(ctx, make([]byte, 512), 4<<20); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Fatalf("read past the end: %v", err)
	}
	if _, err := blockdev.Open(ctx, "iscsi://"+rig.Portal+"/"+tgt.Name+"/0", blockdev.OpenOptions{}); !errors.Is(err, blockdev.ErrNotSupported) {
		t.Fatalf("opening the controller LUN as a disk: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := dev.ReadAt(ctx, make([]byte, 512), 0); !errors.Is(err, blockdev.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// TestReadOnlyOpenRefusesChanges opens a LUN read-only through
// blockdev.Open, as operator tools do: reads work, and writes and
// reservation changes are refused with blockdev.ErrReadOnly before
// anything reaches the target (the LUN keeps its data and has no
// registration).
func TestReadOnlyOpenRefusesChanges(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":ro")
	img := tgt.MustAddLUN(t, 1, 4<<20)
	ctx := testCtx(t)
	want := bytes.Repeat([]byte{0x5A}, 8192)
	rw := openDevice(t, testConfig(t, tgt, 1))
	if err := rw.WriteAt(ctx, want, 64<<10); err != nil {
		t.Fatal(err)
	}
	if err := rw.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dev, err := blockdev.Open(ctx, tgt.URL(1), blockdev.OpenOptions{ReadOnly: true, Logger: testlog.New(t, "iscsi-ro")})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	got := make([]byte, len(want))
	if err := dev.ReadAt(ctx, got, 64<<10); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read-only read: %v (data equal %v)", err, bytes.Equal(got, want))
	}
	err = dev.WriteAt(ctx, make([]byte, 8192), 64<<10)
	if !errors.Is(err, blockdev.ErrReadOnly) || !errors.Is(err, blockdev.ErrNotSupported) {
		t.Fatalf("write on a read-only open: %v, want blockdev.ErrReadOnly", err)
	}
	if err := dev.Flush(ctx); err != nil {
		t.Fatalf("flush on a read-only open: %v", err)
	}
	pr := dev.(blockdev.Reservations)
	if err := pr.Register(ctx, 0xabc); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("register on a read-only open: %v, want blockdev.ErrReadOnly", err)
	}
	if err := pr.Preempt(ctx, 0xabc, 0xdef, blockdev.WriteExclusiveRegistrantsOnly, false); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("preempt on a read-only open: %v, want blockdev.ErrReadOnly", err)
	}
	keys, _, err := pr.ReadKeys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys after refused registration: %x, %v", keys, err)
	}
	file, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file[64<<10:64<<10+len(want)], want) {
		t.Fatal("the LUN's data changed through a read-only open")
	}
}
