package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/clock"
)

// ErrReadOnly: a change through a read-only handle (OpenReadOnly). Not
// retriable on that handle.
var ErrReadOnly = errors.New("store: read-only handle")

// OpenReadOnly opens the store on dev without a slot, for looking only:
// io/fs reads, Stat, ReadDir, Check. With locks (the node's lock manager)
// every read is under PR locks, so it is safe on a running cluster; with
// nil locks it uses locks of its own and must only be used offline (no
// node has the store open). Any change fails with ErrReadOnly. A journal
// that was not replayed is not looked at: what it holds is not seen.
func OpenReadOnly(ctx context.Context, dev blockdev.Device, locks Locker, logger hclog.Logger) (*Store, error) {
	if dev == nil || dev.BlockSize() <= 0 || BlockSize%dev.BlockSize() != 0 {
		return nil, errors.New("store: OpenReadOnly needs a device whose block size divides 4096")
	}
	sb, err := ReadSuperblock(ctx, dev)
	if err != nil {
		return nil, err
	}
	if locks == nil {
		locks = NewMemLocks().Node("offline")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Store{cfg: Config{Device: dev, Locks: locks, WriteBuffer: 4 << 20, OrphanCheck: DefaultOrphanCheck}, dev: dev, rdev: dev, sb: sb, slot: -1,
		log: logger, clk: clock.Real(), glocks: map[glockKey]*glock{}, handlers: map[string]Handler{},
		closing: make(chan struct{}), readOnly: true}
	s.lockPrefix = lockPrefixOf(sb, "")
	// Nothing it changes commits (ErrReadOnly), but a change gets that far.
	s.agOrder = agOrder(0, int(sb.AGCount))
	return s, nil
}

func lockPrefixOf(sb *Superblock, prefix string) string {
	if prefix != "" {
		return prefix
	}
	return fmt.Sprintf("store-%x", sb.UUID[:8])
}

// JournalTx is one committed transaction of a journal, as ReadJournal
// finds it.
type JournalTx struct {
	// Seq is the transaction's sequence number in its slot.
	Seq uint64 `json:"seq"`
	// Pos is its first block within the journal.
	Pos uint32 `json:"pos"`
	// Blocks are the metadata blocks it writes in place.
	Blocks []uint64 `json:"blocks"`
	// Records are the application records it logged.
	Records []Record `json:"records,omitempty"`
	// Acks are the records it acknowledged.
	Acks []uint64 `json:"acks,omitempty"`
	// Applied: its images are known to be in place (a replay skips them).
	Applied bool `json:"applied"`
}

// JournalInfo is a slot's journal header as ReadJournal finds it.
type JournalInfo struct {
	Slot       int    `json:"slot"`
	Version    uint64 `json:"version"`
	TailPos    uint32 `json:"tail_pos"`
	TailSeq    uint64 `json:"tail_seq"`
	AppliedSeq uint64 `json:"applied_seq"`
	SealSeq    uint64 `json:"seal_seq"`
	Handled    uint64 `json:"handled"`
	NextRecord uint64 `json:"next_record"`
	Owner      string `json:"owner"`
	// Pending are the records a recovery would hand over now.
	Pending []Record `json:"pending,omitempty"`
}

// ReadJournal reads slot's journal from its tail without changing
// anything: the header and the committed transactions a replay would see.
func ReadJournal(ctx context.Context, dev blockdev.Device, slot int) (JournalInfo, []JournalTx, error) {
	sb, err := ReadSuperblock(ctx, dev)
	if err != nil {
		return JournalInfo{}, nil, err
	}
	if slot < 0 || slot >= int(sb.Slots) {
		return JournalInfo{}, nil, fmt.Errorf("store: slot %d, the store has %d", slot, sb.Slots)
	}
	s := &Store{dev: dev, sb: sb}
	h, err := s.readJournalHeader(ctx, slot)
	if err != nil {
		return JournalInfo{}, nil, err
	}
	txs, plan, _, err := s.scanJournal(ctx, slot, h)
	if err != nil {
		return JournalInfo{}, nil, err
	}
	info := JournalInfo{Slot: slot, Version: h.Version, TailPos: h.TailPos, TailSeq: h.TailSeq, AppliedSeq: h.AppliedSeq,
		SealSeq: h.SealSeq, Handled: h.Handled, NextRecord: h.NextRecord, Owner: h.Owner, Pending: plan.Pending()}
	out := make([]JournalTx, len(txs))
	for i, tx := range txs {
		out[i] = JournalTx{Seq: tx.Seq, Pos: tx.Pos, Blocks: tx.Targets, Records: tx.Records, Acks: tx.Acks, Applied: tx.Seq <= h.AppliedSeq}
	}
	return info, out, nil
}
