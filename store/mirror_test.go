package store

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// newMirrorStore formats a store on a volume mirrored over two in-memory
// legs.
func newMirrorStore(t *testing.T) (*mirror.Volume, []*blockdev.Mem) {
	t.Helper()
	ctx := context.Background()
	var legs []*blockdev.Mem
	var devs []blockdev.Device
	for i := 0; i < 2; i++ {
		m, err := blockdev.NewMem(24<<20, 512)
		if err != nil {
			t.Fatal(err)
		}
		legs, devs = append(legs, m), append(devs, m)
	}
	if _, err := mirror.Format(ctx, devs, mirror.FormatOptions{RegionSize: 1 << 20, Slots: 2, ClusterID: "st", DataIsZero: true}); err != nil {
		t.Fatal(err)
	}
	cfg := mirror.FastConfig(0)
	cfg.Legs = devs
	cfg.Store, cfg.Locker = mirror.NewMemStateStore(), mirror.NewLocalLocker()
	cfg.Logger = testlog.New(t, "mirror")
	vol, err := mirror.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	if _, err := Format(ctx, vol, FormatOptions{Slots: 2}); err != nil {
		t.Fatal(err)
	}
	return vol, legs
}

// On the mirrored volume: an inode damaged on one leg is read from the
// other and repaired; damaged on every leg, reading that file fails with
// an error that names it and the block, while the rest of the tree works.
func TestMirrorDamagedMetadata(t *testing.T) {
	ctx := context.Background()
	vol, legs := newMirrorStore(t)
	lm := NewMemLocks()
	s := openNode(t, vol, lm, "a", 0)
	s.MkdirAll("site", 0o755)
	s.WriteFile("site/page.html", bytes.Repeat([]byte("page "), 1000), 0o644)
	s.WriteFile("site/other.html", []byte("other"), 0o644)
	fi, _ := s.Stat("site/page.html")
	ino := fi.Sys().(FileStat).Ino
	s.Close()
	good := make([]byte, BlockSize)
	if err := vol.ReadAt(ctx, good, int64(ino)*BlockSize); err != nil {
		t.Fatal(err)
	}
	offs := make([]int64, 2)
	for i, m := range legs {
		offs[i] = int64(bytes.LastIndex(m.Peek(0, m.Size()), good)) // in place, after the journal copies
		if offs[i] < 0 {
			t.Fatalf("inode block not found on leg %d", i)
		}
	}
	bad := append([]byte(nil), good...)
	bad[300] ^= 0x5a
	// Damaged on one leg: every read gets the good copy, and the damaged
	// leg is rewritten from the other.
	for leg := 0; leg < 2; leg++ {
		legs[leg].Poke(offs[leg], bad)
		// Reads are spread over the legs: a few reach the damaged one.
		for i := 0; i < 16 && !bytes.Equal(legs[leg].Peek(offs[leg], BlockSize), good); i++ {
			for k := 0; k < i; k++ {
				// Shift which leg the balancer picks next.
				vol.ReadAt(ctx, make([]byte, BlockSize), int64(2*k)*BlockSize) // not sequential: each read takes a turn
			}
			s := openNode(t, vol, NewMemLocks(), "r", 1)
			got, err := s.ReadFile("site/page.html")
			s.Close()
			if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("page "), 1000)) {
				t.Fatalf("read %d with leg %d damaged: %v", i, leg, err)
			}
		}
		if !bytes.Equal(legs[leg].Peek(offs[leg], BlockSize), good) {
			t.Fatalf("leg %d not repaired from the other", leg)
		}
	}
	legs[0].Poke(offs[0], bad)
	legs[1].Poke(offs[1], bad)
	s = openNode(t, vol, NewMemLocks(), "r", 1)
	defer s.Close()
	_, err := s.ReadFile("site/page.html")
	var pe *fs.PathError
	if err == nil || !errors.As(err, &pe) || pe.Path != "site/page.html" {
		t.Fatalf("read with both legs damaged: %v", err)
	}
	t.Logf("both legs damaged: %v", err)
	if got, err := s.ReadFile("site/other.html"); err != nil || string(got) != "other" {
		t.Fatalf("the rest of the tree: %q %v", got, err)
	}
}
