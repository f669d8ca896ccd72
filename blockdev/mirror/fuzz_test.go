package mirror

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"
)

func sampleSuperblock() Superblock {
	g, _ := NewGeometry(1<<20, 4096, 4, 100)
	t := LegTable{Generation: 7, Legs: []LegInfo{
		{UUID: uuid.MustParse("11111111-1111-1111-1111-111111111111"), Addr: "/dev/sdb", State: LegInSync},
		{UUID: uuid.MustParse("22222222-2222-2222-2222-222222222222"), Addr: "iscsi://127.0.0.1/iqn.x/1", State: LegResyncing, Full: true, Cursor: 5},
	}}
	return Superblock{Version: SuperblockVersion, Volume: uuid.MustParse("33333333-3333-3333-3333-333333333333"), Self: t.Legs[0].UUID, ClusterID: "c1", Geometry: g, Table: t}
}

func TestSuperblockRoundTrip(t *testing.T) {
	sb := sampleSuperblock()
	b, err := EncodeSuperblock(sb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSuperblock(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Volume != sb.Volume || got.Geometry != sb.Geometry || got.ClusterID != sb.ClusterID || len(got.Table.Legs) != 2 || got.Table.Legs[1] != sb.Table.Legs[1] {
		t.Fatalf("round trip: %+v", got)
	}
	b[100] ^= 1
	if _, err := DecodeSuperblock(b); err == nil {
		t.Fatal("corrupt superblock accepted")
	}
}

func FuzzDecodeSuperblock(f *testing.F) {
	b, _ := EncodeSuperblock(sampleSuperblock())
	f.Add(b)
	f.Add(make([]byte, SuperblockSize))
	f.Add([]byte("SHOALVOL"))
	f.Fuzz(func(t *testing.T, in []byte) {
		sb, err := DecodeSuperblock(in)
		if err != nil {
			return
		}
		// Anything accepted must re-encode to an equivalent superblock.
		out, err := EncodeSuperblock(sb)
		if err != nil {
			t.Fatalf("decoded superblock does not encode: %v", err)
		}
		sb2, err := DecodeSuperblock(out)
		if err != nil || sb2.Table.Generation != sb.Table.Generation || sb2.Geometry != sb.Geometry {
			t.Fatalf("re-decode differs: %v", err)
		}
	})
}

func FuzzDecodeBitmapBlock(f *testing.F) {
	vol := uuid.MustParse("33333333-3333-3333-3333-333333333333")
	bm := NewBitmap(RegionsPerBitmapBlock + 10)
	bm.Set(3)
	bm.Set(RegionsPerBitmapBlock + 2)
	f.Add(EncodeBitmapBlock(vol, 1, 0, bm))
	f.Add(EncodeBitmapBlock(vol, 1, 1, bm))
	f.Add(encodeBitmapBlock(vol, 1, 0, bm, true))
	f.Add(make([]byte, BitmapBlockSize))
	f.Fuzz(func(t *testing.T, in []byte) {
		for i := int64(0); i < 2; i++ {
			bb, err := DecodeBitmapBlock(in, vol, 1, i)
			if err != nil {
				continue
			}
			got := NewBitmap(bm.Len())
			bb.MergeInto(got)
			if !bytes.Equal(encodeBitmapBlock(vol, 1, i, got, bb.Open), in) && got.Len() > RegionsPerBitmapBlock*(i+1) {
				t.Fatal("accepted block does not re-encode to itself")
			}
		}
	})
}

// TestBitmapMergeModel checks Bitmap and the block codec against a map.
func TestBitmapMergeModel(t *testing.T) {
	seed := seedFor(t)
	rng := rand.New(rand.NewPCG(seed, 9))
	vol := uuid.New()
	for iter := 0; iter < 50; iter++ {
		n := int64(1 + rng.IntN(3*RegionsPerBitmapBlock))
		model := map[int64]bool{}
		merged := NewBitmap(n)
		for s := 0; s < 3; s++ {
			bm := NewBitmap(n)
			for k := 0; k < rng.IntN(50); k++ {
				r := rng.Int64N(n)
				bm.Set(r)
				model[r] = true
			}
			// Through the on-disk form, block by block.
			for i := int64(0); i*RegionsPerBitmapBlock < n; i++ {
				bb, err := DecodeBitmapBlock(EncodeBitmapBlock(vol, s, i, bm), vol, s, i)
				if err != nil {
					t.Fatal(err)
				}
				bb.MergeInto(merged)
			}
		}
		if merged.Count() != int64(len(model)) {
			t.Fatalf("merged %d regions, model %d", merged.Count(), len(model))
		}
		for _, r := range merged.Regions() {
			if !model[r] {
				t.Fatalf("region %d set but not in model", r)
			}
		}
	}
}

// TestDecideBlockModel checks the scrub's decision against the rule it
// implements, stated simply: a copy that matches its own checksum wins
// over one that does not.
func TestDecideBlockModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(seedFor(t), 1))
	for iter := 0; iter < 500; iter++ {
		n := 2 + rng.IntN(3)
		good := []byte{byte(rng.Uint32()), 1, 2, 3}
		data := make([][]byte, n)
		stored := make([]uint32, n)
		for k := range data {
			data[k] = good
			stored[k] = blockCsum(good)
		}
		bad := rng.IntN(n)
		data[bad] = []byte{9, 9, 9, byte(iter)}
		if rng.IntN(2) == 0 {
			stored[bad] = 12345 // checksum corrupt as well
		}
		k, how := decideBlock(n, func(i int) []byte { return data[i] }, func(i int) uint32 { return stored[i] })
		if how != "checksum" || !bytes.Equal(data[k], good) {
			t.Fatalf("n=%d bad=%d: chose %d by %s", n, bad, k, how)
		}
	}
}
