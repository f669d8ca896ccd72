package blockdev_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
)

func TestFileRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "leg.img")
	if _, err := blockdev.Open(ctx, path, blockdev.OpenOptions{}); err == nil {
		t.Fatal("opening a missing file without Create succeeded")
	}
	if _, err := blockdev.Open(ctx, path, blockdev.OpenOptions{Create: true, CreateSize: 1000}); err == nil {
		t.Fatal("creating a file of an unaligned size succeeded")
	}
	d, err := blockdev.Open(ctx, "file://"+path, blockdev.OpenOptions{Create: true, CreateSize: 1 << 20, Logger: testlog.New(t, "file")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 1<<20 || d.BlockSize() != blockdev.FileBlockSize {
		t.Fatalf("size %d block %d", d.Size(), d.BlockSize())
	}
	// An unaligned Go buffer goes through the bounce buffer.
	raw := make([]byte, 3*4096+1)
	p := raw[1:]
	for i := range p {
		p[i] = byte(i * 7)
	}
	if err := d.WriteAt(ctx, p, 8192); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if err := d.ReadAt(ctx, got, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p) {
		t.Fatal("read back different bytes")
	}
	if err := d.ReadAt(ctx, got[:100], 0); !errors.Is(err, blockdev.ErrUnaligned) {
		t.Fatalf("unaligned read: %v", err)
	}
	if err := d.ReadAt(ctx, got, 1<<20-4096); !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Fatalf("read past end: %v", err)
	}
	if tr, ok := d.(blockdev.Trimmer); !ok {
		t.Fatal("file device is not a Trimmer")
	} else if err := tr.Trim(ctx, 8192, 4096); err != nil && !errors.Is(err, blockdev.ErrNotSupported) {
		t.Fatal(err)
	} else if err == nil {
		if err := d.ReadAt(ctx, got[:4096], 8192); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:4096], make([]byte, 4096)) {
			t.Fatal("trimmed range is not zero")
		}
	}
	d.Close()
	if err := d.ReadAt(ctx, got[:4096], 0); !errors.Is(err, blockdev.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	// Reopen: the data is there and the file was not resized.
	d2, err := blockdev.Open(ctx, path, blockdev.OpenOptions{Create: true, CreateSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if d2.Size() != 1<<20 {
		t.Fatalf("reopen changed size to %d", d2.Size())
	}
	if err := d2.ReadAt(ctx, got, 8192); err != nil || !bytes.Equal(got[4096:], p[4096:]) {
		t.Fatalf("reopened contents differ (%v)", err)
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	_, err := blockdev.Open(context.Background(), "nosuch://x", blockdev.OpenOptions{})
	if err == nil || !strings.Contains(err.Error(), "unknown device scheme") {
		t.Fatalf("got %v", err)
	}
	if _, err := blockdev.Open(context.Background(), "", blockdev.OpenOptions{}); err == nil {
		t.Fatal("empty address accepted")
	}
	if _, err := blockdev.Open(context.Background(), t.TempDir(), blockdev.OpenOptions{}); err == nil {
		t.Fatal("a directory was accepted as a device")
	}
}

func TestMemCrash(t *testing.T) {
	ctx := context.Background()
	m, err := blockdev.NewMem(64*512, 512)
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{0xaa}, 512)
	if err := m.WriteAt(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	b := bytes.Repeat([]byte{0xbb}, 32*512)
	if err := m.WriteAt(ctx, b, 0); err != nil {
		t.Fatal(err)
	}
	if m.Unflushed() != 1 {
		t.Fatalf("unflushed %d", m.Unflushed())
	}
	drop := m.CrashClone(blockdev.CrashOptions{})
	if !bytes.Equal(drop.Peek(0, 512), a) || !bytes.Equal(drop.Peek(512, 512), make([]byte, 512)) {
		t.Fatal("drop-all crash kept unflushed data")
	}
	keep := m.CrashClone(blockdev.CrashOptions{KeepProbability: 1})
	if !bytes.Equal(keep.Peek(0, 32*512), b) {
		t.Fatal("keep-all crash lost data")
	}
	torn := m.CrashClone(blockdev.CrashOptions{KeepProbability: 0.5, Seed: 7})
	kept := 0
	for i := int64(0); i < 32; i++ {
		blk := torn.Peek(i*512, 512)
		switch {
		case bytes.Equal(blk, b[:512]):
			kept++
		case i == 0 && bytes.Equal(blk, a), i > 0 && bytes.Equal(blk, make([]byte, 512)):
		default:
			t.Fatalf("block %d holds neither old nor new data", i)
		}
	}
	if kept == 0 || kept == 32 {
		t.Fatalf("torn crash kept %d of 32 blocks", kept)
	}
	// The crashed clone is a normal device again.
	if err := torn.WriteAt(ctx, a, 512); err != nil {
		t.Fatal(err)
	}
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	m, _ := blockdev.NewMem(16*512, 512)
	f := blockdev.NewFaulty(m)
	buf := make([]byte, 512)
	f.FailReads(1024, 512)
	if err := f.ReadAt(ctx, buf, 1024); !errors.Is(err, blockdev.ErrIO) {
		t.Fatalf("injected read error: %v", err)
	}
	if err := f.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	// The other host's path to the same device is unaffected.
	if err := m.ReadAt(ctx, buf, 1024); err != nil {
		t.Fatal(err)
	}
	f.FailAfter(2)
	if err := f.WriteAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteAt(ctx, buf, 0); !errors.Is(err, blockdev.ErrIO) {
		t.Fatalf("after FailAfter: %v", err)
	}
	f.Clear()
	m.SetOffline(true)
	if err := f.ReadAt(ctx, buf, 0); !errors.Is(err, blockdev.ErrIO) {
		t.Fatalf("offline device: %v", err)
	}
}

// TestImportDirection: blockdev and its subpackages never depend on the
// lock manager, the daemon, the store or the web tier. Non-test
// dependencies only: test rigs (fixtures) may be used by tests, the code
// itself stays independent.
func TestImportDirection(t *testing.T) {
	testutil.CheckDeps(t, testutil.Deps{
		Packages: []string{"blockdev/..."},
		Allow:    []string{"blockdev/...", "internal/..."},
	})
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }

// TestFileReadOnly: a file opened read-only reads, refuses writes with
// ErrReadOnly (which also matches ErrNotSupported) and keeps its bytes.
func TestFileReadOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "leg.img")
	rw, err := blockdev.Open(ctx, path, blockdev.OpenOptions{Create: true, CreateSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0x3C}, 4096)
	if err := rw.WriteAt(ctx, want, 8192); err != nil {
		t.Fatal(err)
	}
	rw.Close()
	ro, err := blockdev.Open(ctx, path, blockdev.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	err = ro.WriteAt(ctx, make([]byte, 4096), 8192)
	if !errors.Is(err, blockdev.ErrReadOnly) || !errors.Is(err, blockdev.ErrNotSupported) {
		t.Fatalf("write to a read-only file: %v, want ErrReadOnly", err)
	}
	if err := ro.Flush(ctx); err != nil {
		t.Fatalf("flush of a read-only file: %v", err)
	}
	got := make([]byte, 4096)
	if err := ro.ReadAt(ctx, got, 8192); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read-only read: %v", err)
	}
}
