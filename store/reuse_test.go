package store

import (
	"bytes"
	"context"
	"testing"

	"github.com/shoal-ha/shoal/internal/testlog"
)

// dataBlocks lists the device blocks of file name's data.
func fileBlocks(t *testing.T, s *Store, name string) map[uint64]bool {
	t.Helper()
	out := map[uint64]bool{}
	err := s.View(context.Background(), func(tx *Tx) error {
		in, _, err := tx.resolve(name, Shared)
		if err != nil {
			return err
		}
		for _, x := range in.Extents {
			for k := uint64(0); k < uint64(x.Count); k++ {
				out[x.Disk+k] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A block whose older image is in the journal (here a small file's data,
// which goes through the journal) and that is then freed and written
// again as a larger file's data (which goes straight to the device
// before its commit) must keep the new data: neither the replay of the
// journal after a crash nor a checkpoint of the images kept in memory may
// write the old image over it (what JBD2's revoke records are for).
func TestReusedBlockKeepsItsNewData(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	a := openNode(t, dev, lm, "a", 0)
	small := bytes.Repeat([]byte("old "), 3*BlockSize/4) // 3 blocks: journaled
	big := bytes.Repeat([]byte("new!"), 40*BlockSize/4)  // 40 blocks: written before the commit
	if err := a.MkdirAll("d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile("d/small", small, 0o644); err != nil {
		t.Fatal(err)
	}
	old := fileBlocks(t, a, "d/small")
	if err := a.Remove("d/small"); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile("d/big", big, 0o644); err != nil {
		t.Fatal(err)
	}
	reused := 0
	for b := range fileBlocks(t, a, "d/big") {
		if old[b] {
			reused++
		}
	}
	if reused == 0 {
		t.Fatalf("the big file reuses none of the small file's blocks %v: the test does not test", old)
	}
	crashed := dev.CrashClone(blockdevKeepAll())
	// The running node reads the new data, and so does every node once
	// it checkpoints.
	if got, err := a.ReadFile("d/big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("writer read %d bytes (%v), want the new %d", len(got), err, len(big))
	}
	if err := a.checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := openNode(t, dev, lm, "b", 1)
	if got, err := b.ReadFile("d/big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("other node read %d bytes (%v), want the new %d", len(got), err, len(big))
	}
	// After a crash, the slot's own replay.
	cfg := DefaultConfig(crashed, 0, NewMemLocks().Node("a2"))
	cfg.Logger = testlog.New(t, "a2")
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.ReadFile("d/big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("after the replay read %d bytes (%v), want the new %d (%d blocks of the reused %d differ)", len(got), err, len(big), diffBlocks(got, big), reused)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, crashed)
}

func diffBlocks(a, b []byte) int {
	n := 0
	for i := 0; i+BlockSize <= min(len(a), len(b)); i += BlockSize {
		if !bytes.Equal(a[i:i+BlockSize], b[i:i+BlockSize]) {
			n++
		}
	}
	return n
}
