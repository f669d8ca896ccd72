package store

import (
	"bytes"
	"testing"
)

// Every decoder takes any bytes without panicking, and what it accepts
// encodes back to the same block.

func FuzzSuperblock(f *testing.F) {
	sb, err := Layout(64<<20, FormatOptions{Slots: 3})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sb.encode())
	f.Add(make([]byte, BlockSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = fitBlock(b)
		got, err := DecodeSuperblock(b)
		if err != nil {
			return
		}
		if again := got.encode(); !bytes.Equal(again, b) {
			t.Fatal("superblock does not encode back to the same block")
		}
	})
}

func FuzzInode(f *testing.F) {
	const ino = 1000
	dir := &inode{Ino: ino, Gen: 3, Type: typeDir, Mode: 0o755, Nlink: 1, Parent: 999, Buckets: make([]uint64, dirBuckets)}
	dir.Buckets[7] = 1234
	f.Add(dir.encode())
	f.Add((&inode{Ino: ino, Gen: 1, Type: typeFile, Layout: layoutInline, Nlink: 1, Size: 5, Inline: []byte("hello")}).encode())
	f.Add((&inode{Ino: ino, Gen: 1, Type: typeFile, Layout: layoutExtents, Nlink: 1, Size: 9000,
		Extents: []Extent{{0, 2000, 2}, {2, 3000, 1}}}).encode())
	f.Add((&inode{Ino: ino, Gen: 1, Type: typeFile, Layout: layoutOverflow, Nlink: 1, Size: 1 << 30, ExtBlk: 77}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		b = fitBlock(b)
		in, err := decodeInode(b, ino)
		if err != nil {
			return
		}
		if in.Layout == layoutOverflow {
			return // the extents live elsewhere; the count field is not kept
		}
		if again := in.encode(); !bytes.Equal(again[:inodeFixed], b[:inodeFixed]) {
			t.Fatal("inode fixed fields do not encode back")
		}
	})
}

func FuzzDirLeaf(f *testing.F) {
	l := &dirLeaf{Next: 5, Entries: []dirEntry{{Name: "index.html", Ino: 10, Gen: 1, Type: typeFile}, {Name: "css", Ino: 11, Gen: 2, Type: typeDir}}}
	f.Add(l.encode(500, 9, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = fitBlock(b)
		got, h, err := decodeDirLeaf(b, 500)
		if err != nil {
			return
		}
		if again := got.encode(500, h.Owner, h.Gen); !bytes.Equal(again[:got.used()], b[:got.used()]) {
			t.Fatal("directory leaf does not encode back")
		}
	})
}

func FuzzExtentBlock(f *testing.F) {
	x := &extentBlock{Next: 0, Extents: []Extent{{0, 100, 10}, {10, 300, 5}}}
	f.Add(x.encode(700, 9, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeExtentBlock(fitBlock(b), 700)
	})
}

func FuzzAGHeader(f *testing.F) {
	h := &agHeader{Free: 10, NextGen: 4, Bitmap: make([]byte, 20)}
	h.Bitmap[0] = 1
	f.Add(h.encode(300))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = fitBlock(b)
		got, err := decodeAGHeader(b, 300)
		if err != nil {
			return
		}
		if again := got.encode(300); !bytes.Equal(again, b[:BlockSize]) && bytes.Equal(b[agBitmapOff+len(got.Bitmap):], make([]byte, BlockSize-agBitmapOff-len(got.Bitmap))) {
			t.Fatal("allocation group header does not encode back")
		}
	})
}

func FuzzJournalHeader(f *testing.F) {
	h := &journalHeader{Version: 3, TailPos: 9, TailSeq: 100, AppliedSeq: 99, NextRecord: 7, Owner: "node1/abc"}
	f.Add(h.encode(40, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeJournalHeader(fitBlock(b), 40)
	})
}

// FuzzJournalTx feeds a transaction's bytes to the journal decoders: a
// damaged one is refused (it ends the journal), an intact one decodes to
// what was written.
func FuzzJournalTx(f *testing.F) {
	const start = 100
	img := (&inode{Ino: 5000, Gen: 1, Type: typeFile, Nlink: 1, Size: 2, Inline: []byte("hi")}).encode()
	tx := &journalTx{Seq: 42, Pos: 2, Targets: []uint64{5000}, Images: [][]byte{img},
		Records: []Record{{Kind: "intent", ID: 7, Payload: []byte("payload")}}, Acks: []uint64{3}}
	buf, err := encodeTx(tx, start, 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(buf, uint16(0), byte(0))
	f.Add(buf, uint16(BlockSize+10), byte(1))
	f.Add(buf, uint16(len(buf)-3), byte(0x80))
	f.Fuzz(func(t *testing.T, b []byte, at uint16, x byte) {
		if len(b) < 2*BlockSize || len(b)%BlockSize != 0 || len(b) > 64*BlockSize {
			parseRecordStream(b, 1)
			return
		}
		orig := bytes.Equal(b, buf)
		b = append([]byte(nil), b...)
		b[int(at)%len(b)] ^= x
		got, err := decodeTxBody(b[:BlockSize], b[BlockSize:], start, 2, 1)
		switch {
		case orig && x == 0 && (err != nil || got.Seq != 42 || len(got.Records) != 1 || got.Records[0].ID != 7 || string(got.Records[0].Payload) != "payload"):
			t.Fatalf("intact transaction decoded as %+v (%v)", got, err)
		case orig && x != 0 && err == nil:
			// Every byte is under a checksum: a damaged transaction
			// ends the journal.
			t.Fatalf("damaged transaction (byte %d ^ %#x) accepted", int(at)%len(b), x)
		}
	})
}

func TestRecordStreamRoundTrip(t *testing.T) {
	recs := []Record{{Kind: "a", Slot: 2, ID: 1, Payload: nil}, {Kind: "bb", Slot: 2, ID: 9, Payload: bytes.Repeat([]byte{1}, 10000)}}
	gotR, gotA, err := parseRecordStream(recordStream(recs, []uint64{4, 5}), 2)
	if err != nil || len(gotR) != 2 || gotR[1].ID != 9 || len(gotR[1].Payload) != 10000 || len(gotA) != 2 || gotA[1] != 5 {
		t.Fatalf("round trip: %+v %v %v", gotR, gotA, err)
	}
}

// fitBlock pads or cuts b to one block.
func fitBlock(b []byte) []byte {
	out := make([]byte, BlockSize)
	copy(out, b)
	return out
}
