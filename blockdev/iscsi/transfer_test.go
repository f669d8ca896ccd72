package iscsi_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
)

// TestTransfers writes and reads back large and odd-sized transfers that
// cross segment and burst boundaries, under several negotiated settings,
// and compares with a model and with the backing file.
func TestTransfers(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	cases := []struct {
		name   string
		params map[string]string // target-side settings
		digest bool
		cdb16  bool
		check  func(t *testing.T, p iscsi.Params)
	}{
		{name: "defaults"},
		{name: "16-byte CDBs", cdb16: true},
		{name: "digests", digest: true, params: map[string]string{"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}, check: func(t *testing.T, p iscsi.Params) {
			if !p.HeaderDigest || !p.DataDigest {
				t.Fatalf("digests not in force: %+v", p)
			}
		}},
		{name: "unsolicited small bursts", params: map[string]string{
			"InitialR2T": "No", "FirstBurstLength": "65536", "MaxBurstLength": "131072",
			"MaxRecvDataSegmentLength": "8192", "MaxXmitDataSegmentLength": "16384",
		}, check: func(t *testing.T, p iscsi.Params) {
			if p.InitialR2T || p.MaxBurstLength != 131072 || p.FirstBurstLength != 65536 || p.MaxXmitDataSegment != 8192 {
				t.Fatalf("target settings not negotiated: %+v", p)
			}
		}},
		{name: "R2T only", params: map[string]string{"InitialR2T": "Yes", "ImmediateData": "No", "MaxBurstLength": "65536",
			"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"},
			digest: true, check: func(t *testing.T, p iscsi.Params) {
				if !p.InitialR2T || p.ImmediateData || !p.HeaderDigest || !p.DataDigest {
					t.Fatalf("want InitialR2T=Yes ImmediateData=No: %+v", p)
				}
			}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tgt := rig.MustAddTarget(t, testIQN+":xfer"+string(rune('a'+i)))
			for k, v := range tc.params {
				if err := tgt.SetParam(k, v); err != nil {
					t.Fatal(err)
				}
			}
			const size = 8 << 20
			img := tgt.MustAddLUN(t, 1, size)
			cfg := testConfig(t, tgt, 1)
			cfg.HeaderDigest, cfg.DataDigest = tc.digest, tc.digest
			cfg.CDB16 = tc.cdb16
			cfg.MaxTransfer = 512 << 10
			d := openDevice(t, cfg)
			if tc.check != nil {
				tc.check(t, d.Session().Params())
			}
			ctx := testCtx(t)
			model := make([]byte, size)
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for round := 0; round < 12; round++ {
				blocks := 1 + rng.IntN(5000) // up to ~2.5 MiB, odd sizes
				if round%4 == 0 {
					blocks = 2048 + 1 // 1 MiB + 512: one past the burst
				}
				off := int64(rng.IntN(size/512-blocks)) * 512
				buf := randomBytes(rng, blocks*512)
				if err := d.WriteAt(ctx, buf, off); err != nil {
					t.Fatalf("write %d bytes at %d: %v", len(buf), off, err)
				}
				copy(model[off:], buf)
				// Read an overlapping, differently cut range back.
				roff := max(0, off-int64(rng.IntN(64))*512)
				rlen := min(int64(size)-roff, int64(len(buf))+int64(rng.IntN(128))*512)
				got := make([]byte, rlen)
				if err := d.ReadAt(ctx, got, roff); err != nil {
					t.Fatalf("read %d bytes at %d: %v", rlen, roff, err)
				}
				if !bytes.Equal(got, model[roff:roff+rlen]) {
					t.Fatalf("round %d: read at %d differs from the model", round, roff)
				}
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			file, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(file, model) {
				t.Fatal("backing file differs from the model")
			}
		})
	}
}

// TestManyInFlight keeps more than 32 commands outstanding at once, and
// with a queue shorter than the callers, keeps them waiting for a slot
// without losing any.
func TestManyInFlight(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":depth")
	// Every worker owns its offsets: workers*per chunks fit in the LUN.
	const size = 64 << 20
	img := tgt.MustAddLUN(t, 1, size)
	t.Run("deep", func(t *testing.T) {
		st := manyInFlight(t, tgt, 64)
		if st.PeakInFlight < 32 {
			t.Fatalf("peak of %d commands in flight, want at least 32", st.PeakInFlight)
		}
	})
	t.Run("short queue", func(t *testing.T) {
		st := manyInFlight(t, tgt, 8)
		if st.PeakInFlight != 8 {
			t.Fatalf("peak of %d commands in flight with a queue of 8", st.PeakInFlight)
		}
	})
	if _, err := os.Stat(img); err != nil {
		t.Fatal(err)
	}
}

// manyInFlight has 48 callers write and read back their own chunks
// through a session with the given queue depth.
func manyInFlight(t *testing.T, tgt *tgtrig.Target, depth int) iscsi.Stats {
	const size = 64 << 20
	cfg := testConfig(t, tgt, 1)
	cfg.QueueDepth = depth
	d := openDevice(t, cfg)
	ctx := testCtx(t)
	const workers, per, chunk = 48, 20, 64 << 10
	if workers*per*chunk > size {
		t.Fatal("workers would share offsets")
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, chunk)
			got := make([]byte, chunk)
			for i := 0; i < per; i++ {
				off := int64(w*per+i) * chunk
				for j := range buf {
					buf[j] = byte(w + i + j)
				}
				if err := d.WriteAt(ctx, buf, off); err != nil {
					errs <- err
					return
				}
				if err := d.ReadAt(ctx, got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, buf) {
					i := 0
					for got[i] == buf[i] {
						i++
					}
					errs <- fmt.Errorf("worker %d: read back differs from byte %d of %d at offset %d", w, i, len(buf), off)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := d.Session().Stats()
	t.Logf("%d commands, peak %d in flight", st.Commands, st.PeakInFlight)
	return st
}
