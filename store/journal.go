package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// A slot's journal is a circular log of transactions. Blocks 0 and 1 hold
// two copies of the journal header, written alternately (the valid one
// with the higher Version wins, so a torn header write loses nothing);
// transactions fill blocks 2..JournalBlocks-1. A transaction is
//
//	descriptor | metadata block images ... | record blocks ... | commit
//
// written contiguously (a transaction that does not fit before the end
// starts again at block 2). The commit carries a CRC-32C of everything
// before it, so a torn transaction is never replayed.
const journalData = 2

// Record is an application record logged with Tx.Log.
type Record struct {
	// Kind names the handler the record goes to in recovery.
	Kind string
	// Slot is the slot whose journal holds the record.
	Slot int
	// ID is the record's number in its slot, unique across incarnations.
	ID uint64
	// Payload is the caller's bytes.
	Payload []byte
}

// journalHeader anchors a slot's journal.
type journalHeader struct {
	Version    uint64 // grows with every header write; picks the newer copy
	TailPos    uint32 // block (within the journal) of the oldest live transaction
	TailSeq    uint64 // its sequence number
	AppliedSeq uint64 // transactions up to this one are in place (replay skips their images)
	SealSeq    uint64 // recovery: records of transactions up to this one are handed over
	Handled    uint64 // recovery: how many of the sealed pending records were handled
	NextRecord uint64 // next record ID
	Owner      string // who has (or last had) the slot open: Config.Owner
}

// maxOwner is the longest Config.Owner.
const maxOwner = 200

func (h *journalHeader) encode(blk uint64, slot int) []byte {
	b := make([]byte, BlockSize)
	e := enc{b: b, off: headerSize}
	e.u64(h.Version)
	e.u32(h.TailPos)
	e.u64(h.TailSeq)
	e.u64(h.AppliedSeq)
	e.u64(h.SealSeq)
	e.u64(h.Handled)
	e.u64(h.NextRecord)
	e.u8(uint8(len(h.Owner)))
	e.bytes([]byte(h.Owner))
	sealBlock(b, blockHeader{Kind: KindJournalHeader, Block: blk, Gen: uint32(slot)})
	return b
}

// DecodeJournalHeader decodes one copy of a journal header at block blk.
func decodeJournalHeader(b []byte, blk uint64) (*journalHeader, error) {
	if _, err := openBlock(b, blk, KindJournalHeader); err != nil {
		return nil, err
	}
	d := dec{b: b, off: headerSize}
	h := &journalHeader{Version: d.u64(), TailPos: d.u32(), TailSeq: d.u64(), AppliedSeq: d.u64(),
		SealSeq: d.u64(), Handled: d.u64(), NextRecord: d.u64()}
	h.Owner = string(d.bytes(int(d.u8())))
	return h, d.err
}

// pickHeader chooses between the two header copies.
func pickHeader(a, b *journalHeader) (*journalHeader, int) {
	switch {
	case a == nil && b == nil:
		return nil, -1
	case b == nil || (a != nil && a.Version >= b.Version):
		return a, 0
	default:
		return b, 1
	}
}

// journalTx is one transaction as written to or read from a journal.
type journalTx struct {
	Seq     uint64
	Pos     uint32 // first block within the journal
	Targets []uint64
	Images  [][]byte
	Records []Record
	Acks    []uint64
}

const (
	descFixed     = headerSize + 16
	maxTxImages   = (BlockSize - descFixed) / 8
	recBlockFixed = headerSize + 4
	recBlockData  = BlockSize - recBlockFixed
)

// recordStream encodes records and acks as one byte stream.
func recordStream(recs []Record, acks []uint64) []byte {
	var out []byte
	var b8 [8]byte
	for _, r := range recs {
		out = append(out, 1)
		binary.LittleEndian.PutUint64(b8[:], r.ID)
		out = append(out, b8[:]...)
		out = append(out, byte(len(r.Kind)))
		out = append(out, r.Kind...)
		binary.LittleEndian.PutUint32(b8[:4], uint32(len(r.Payload)))
		out = append(out, b8[:4]...)
		out = append(out, r.Payload...)
	}
	for _, a := range acks {
		out = append(out, 2)
		binary.LittleEndian.PutUint64(b8[:], a)
		out = append(out, b8[:]...)
	}
	return out
}

func parseRecordStream(p []byte, slot int) ([]Record, []uint64, error) {
	d := dec{b: p}
	var recs []Record
	var acks []uint64
	for d.off < len(p) && d.err == nil {
		switch t := d.u8(); t {
		case 1:
			r := Record{Slot: slot, ID: d.u64()}
			r.Kind = string(d.bytes(int(d.u8())))
			r.Payload = d.bytes(int(d.u32()))
			if d.err == nil {
				recs = append(recs, r)
			}
		case 2:
			acks = append(acks, d.u64())
		default:
			return nil, nil, fmt.Errorf("%w: journal record of type %d", ErrCorrupt, t)
		}
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	return recs, acks, nil
}

// encodeTx lays tx out as journal blocks; start is the absolute block
// number of the journal's block 0 and tx.Pos where it goes.
func encodeTx(tx *journalTx, start uint64, slot int) ([]byte, error) {
	if len(tx.Targets) > maxTxImages {
		return nil, fmt.Errorf("%w: transaction of %d metadata blocks (max %d)", ErrJournalFull, len(tx.Targets), maxTxImages)
	}
	stream := recordStream(tx.Records, tx.Acks)
	nrec := (len(stream) + recBlockData - 1) / recBlockData
	n := 1 + len(tx.Images) + nrec + 1
	out := make([]byte, n*BlockSize)
	abs := func(i int) uint64 { return start + uint64(tx.Pos) + uint64(i) }
	desc := out[:BlockSize]
	e := enc{b: desc, off: headerSize}
	e.u64(tx.Seq)
	e.u32(uint32(len(tx.Images)))
	e.u32(uint32(nrec))
	for _, t := range tx.Targets {
		e.u64(t)
	}
	sealBlock(desc, blockHeader{Kind: KindJournalDesc, Block: abs(0), Gen: uint32(slot)})
	for i, img := range tx.Images {
		copy(out[(1+i)*BlockSize:], img)
	}
	for i := 0; i < nrec; i++ {
		b := out[(1+len(tx.Images)+i)*BlockSize : (2+len(tx.Images)+i)*BlockSize]
		chunk := stream[i*recBlockData:]
		if len(chunk) > recBlockData {
			chunk = chunk[:recBlockData]
		}
		binary.LittleEndian.PutUint32(b[headerSize:], uint32(len(chunk)))
		copy(b[recBlockFixed:], chunk)
		sealBlock(b, blockHeader{Kind: KindJournalRecords, Block: abs(1 + len(tx.Images) + i), Gen: uint32(slot)})
	}
	commit := out[(n-1)*BlockSize:]
	sum := crc32.Checksum(out[:(n-1)*BlockSize], castagnoli)
	e = enc{b: commit, off: headerSize}
	e.u64(tx.Seq)
	e.u32(uint32(n))
	e.u32(sum)
	sealBlock(commit, blockHeader{Kind: KindJournalCommit, Block: abs(n - 1), Gen: uint32(slot)})
	return out, nil
}

// txBlocks is how many journal blocks tx takes.
func txBlocks(nImages int, stream int) int {
	return 2 + nImages + (stream+recBlockData-1)/recBlockData
}

// decodeDesc decodes a descriptor block at absolute block blk: its
// sequence number, target blocks and record block count.
func decodeDesc(b []byte, blk uint64) (seq uint64, targets []uint64, nrec int, err error) {
	if _, err := openBlock(b, blk, KindJournalDesc); err != nil {
		return 0, nil, 0, err
	}
	d := dec{b: b, off: headerSize}
	seq = d.u64()
	ni := int(d.u32())
	nrec = int(d.u32())
	if ni > maxTxImages || nrec > 1<<16 {
		return 0, nil, 0, fmt.Errorf("%w: journal descriptor %d: %d images, %d record blocks", ErrCorrupt, blk, ni, nrec)
	}
	targets = make([]uint64, ni)
	for i := range targets {
		targets[i] = d.u64()
	}
	return seq, targets, nrec, d.err
}

// decodeTxBody checks and decodes the rest of a transaction whose
// descriptor desc was read at journal position pos: rest holds the images,
// record blocks and commit.
func decodeTxBody(desc, rest []byte, start uint64, pos uint32, slot int) (*journalTx, error) {
	seq, targets, nrec, err := decodeDesc(desc, start+uint64(pos))
	if err != nil {
		return nil, err
	}
	n := 1 + len(targets) + nrec + 1
	if len(rest) != (n-1)*BlockSize {
		return nil, fmt.Errorf("%w: journal transaction %d: %d bytes after the descriptor, want %d", ErrCorrupt, seq, len(rest), (n-1)*BlockSize)
	}
	commitBlk := start + uint64(pos) + uint64(n-1)
	commit := rest[(n-2)*BlockSize:]
	if _, err := openBlock(commit, commitBlk, KindJournalCommit); err != nil {
		return nil, err
	}
	d := dec{b: commit, off: headerSize}
	cseq, cn, sum := d.u64(), int(d.u32()), d.u32()
	if cseq != seq || cn != n {
		return nil, fmt.Errorf("%w: journal commit %d is for transaction %d of %d blocks, want %d of %d", ErrCorrupt, commitBlk, cseq, cn, seq, n)
	}
	crc := crc32.Update(crc32.Checksum(desc, castagnoli), castagnoli, rest[:(n-2)*BlockSize])
	if crc != sum {
		return nil, fmt.Errorf("%w: journal transaction %d: checksum %08x, computed %08x (torn)", ErrCorrupt, seq, sum, crc)
	}
	tx := &journalTx{Seq: seq, Pos: pos, Targets: targets}
	for i := range targets {
		tx.Images = append(tx.Images, rest[i*BlockSize:(i+1)*BlockSize])
	}
	var stream []byte
	for i := 0; i < nrec; i++ {
		b := rest[(len(targets)+i)*BlockSize : (len(targets)+i+1)*BlockSize]
		if _, err := openBlock(b, start+uint64(pos)+uint64(1+len(targets)+i), KindJournalRecords); err != nil {
			return nil, err
		}
		l := int(binary.LittleEndian.Uint32(b[headerSize:]))
		if l > recBlockData {
			return nil, fmt.Errorf("%w: journal record block of %d bytes", ErrCorrupt, l)
		}
		stream = append(stream, b[recBlockFixed:recBlockFixed+l]...)
	}
	tx.Records, tx.Acks, err = parseRecordStream(stream, slot)
	if err != nil {
		return nil, fmt.Errorf("journal transaction %d: %w", seq, err)
	}
	return tx, nil
}

// ReplayPlan is the deterministic core of journal replay: fed the
// transactions of a journal in order, it decides which metadata images go
// in place and which application records are still to be handed over.
// It does no I/O.
type ReplayPlan struct {
	hdr      journalHeader
	lastSeq  uint64
	txs      int
	apply    int
	records  []Record
	seen     map[uint64]bool
	acked    map[uint64]bool
	maxRecID uint64
}

// ReplayDecision says what to do with one transaction.
type ReplayDecision struct {
	// Apply: write the transaction's images in place (it is newer than
	// the header's AppliedSeq).
	Apply bool
}

func newReplayPlan(h journalHeader) *ReplayPlan {
	return &ReplayPlan{hdr: h, lastSeq: h.TailSeq - 1, seen: map[uint64]bool{}, acked: map[uint64]bool{}}
}

// Expect is the sequence number the next transaction must have.
func (p *ReplayPlan) Expect() uint64 { return p.lastSeq + 1 }

// Feed takes the next transaction of the journal (whose Seq is Expect()).
func (p *ReplayPlan) Feed(tx *journalTx) ReplayDecision {
	p.lastSeq = tx.Seq
	p.txs++
	dec := ReplayDecision{Apply: tx.Seq > p.hdr.AppliedSeq}
	if dec.Apply {
		p.apply++
	}
	for _, r := range tx.Records {
		if r.ID >= p.maxRecID {
			p.maxRecID = r.ID + 1
		}
		if !p.seen[r.ID] {
			// A record carried forward across a checkpoint appears twice
			// when the checkpoint did not finish: the first one counts.
			p.seen[r.ID] = true
			p.records = append(p.records, r)
		}
	}
	for _, a := range tx.Acks {
		p.acked[a] = true
	}
	return dec
}

// LastSeq is the sequence number of the last transaction fed (TailSeq-1
// when none).
func (p *ReplayPlan) LastSeq() uint64 { return p.lastSeq }

// Pending lists the records not acknowledged, in journal order, with the
// ones recovery already handled (the header's Handled count) left out.
func (p *ReplayPlan) Pending() []Record {
	var out []Record
	for _, r := range p.records {
		if !p.acked[r.ID] {
			out = append(out, r)
		}
	}
	h := p.hdr.Handled
	if h > uint64(len(out)) {
		h = uint64(len(out))
	}
	return out[h:]
}

// AllPending lists every record not acknowledged, handled or not.
func (p *ReplayPlan) AllPending() []Record {
	var out []Record
	for _, r := range p.records {
		if !p.acked[r.ID] {
			out = append(out, r)
		}
	}
	return out
}

// NextRecord is the first record ID not used in the journal.
func (p *ReplayPlan) NextRecord() uint64 {
	if p.hdr.NextRecord > p.maxRecID {
		return p.hdr.NextRecord
	}
	return p.maxRecID
}
