package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/clock"
)

// NoSlot opens a volume as a tool: it can recover, resync, scrub, verify
// and change legs, but takes no writes (it has no bitmap of its own).
const NoSlot = -1

// Config says how to open a volume.
type Config struct {
	// Legs are the opened leg devices, in any order; each is matched to
	// the leg table by the leg UUID in its superblock. The volume owns
	// them from Open on and closes them in Close.
	Legs []blockdev.Device
	// Slot is this node's slot (0 to the slot count chosen at format) or
	// NoSlot. Two live nodes must never share a slot.
	Slot int
	// Locker coordinates regions between nodes. Nil: a private
	// LocalLocker, which is only right when one process uses the volume.
	Locker RegionLocker
	// CallerOrdersWrites says the caller never has two overlapping writes
	// in flight at once anywhere in the cluster (the store orders them
	// with its own locks). Writes then hold their regions' locks shared
	// (one lock per region, which the lock manager keeps cached: no lock
	// request per write) instead of an exclusive lock on each written
	// range. Copies of a region (recovery, resync, heal, scrub repair,
	// read repair) still lock it exclusively and wait for the writes. If
	// the caller breaks the promise, overlapping writes may leave the legs
	// with different last writes.
	CallerOrdersWrites bool
	// Store is the cluster-wide leg table. Nil: the superblocks are the
	// only copy; every volume re-reads them from the legs (processes that
	// share the legs and the Locker then agree without etcd).
	Store LegStateStore
	// OpenLeg opens a leg that another node added, by its address. Nil
	// means blockdev.Open.
	OpenLeg func(ctx context.Context, addr string) (blockdev.Device, error)
	// AllowMissingLegs lets Open proceed when a leg the table counts as
	// in sync was not given; such legs are marked failed cluster-wide
	// (with ReadOnly they are only left out and reported in Notes).
	AllowMissingLegs bool
	// ReadOnly opens the volume to look at it (inspect, status, check):
	// nothing is ever written to a leg or to the leg state store, by Open,
	// by any call, or by Close. Legs opened by their recorded addresses
	// are opened read-only (by the default OpenLeg). Calls that would
	// write return ErrReadOnly. Requires Slot == NoSlot.
	ReadOnly bool
	// Logger receives the volume's log lines. Nil: no logging.
	Logger hclog.Logger
	// Clock paces background work and resync. Nil: the wall clock.
	Clock clock.Clock
	// RefreshInterval is how often the volume re-reads the leg table from
	// the store and the other slots' bitmaps from the legs.
	RefreshInterval time.Duration
	// ClearDelay is how long a region stays marked after its last write
	// before its bit may be cleared (saves bitmap writes for hot regions).
	// For 4 x ClearDelay after that, the next mark written to the same
	// bitmap block sets the region's bit again along with its own (no
	// further I/O): a writer that paused comes back to the same regions.
	ClearDelay time.Duration
	// SettleTime is how long a resync waits after publishing a leg as
	// resyncing before copying, so that every node writes to the leg by
	// then. Must be at least 2 x RefreshInterval.
	SettleTime time.Duration
	// ChecksumCache is how many bytes of checksum areas a node keeps
	// cached, each under a hold of its region's checksum lock, so writes
	// patch memory instead of reading and rewriting the area on the legs
	// (the region's write-intent mark covers the area until it is written
	// back). Only used when Locker is a RegionHolder. 0 turns the cache
	// off: every write reads and rewrites its regions' areas. It also
	// bounds the region locks ordered writes keep as holds (one per
	// area the cache has room for); with 0 they keep none.
	ChecksumCache int64
	// ResyncRate limits resync, recovery and scrub copying, in bytes per
	// second. 0 means unlimited.
	ResyncRate int64
	// Progress, if set, is told about resync, recovery and scrub progress.
	Progress func(Progress)
}

// Progress is a snapshot of a long operation.
type Progress struct {
	Op     string `json:"op"` // "recover", "resync", "scrub", "verify"
	Leg    string `json:"leg,omitempty"`
	Done   int64  `json:"done"`  // regions finished
	Total  int64  `json:"total"` // regions to do
	Copied int64  `json:"copied_bytes"`
}

// DefaultConfig is a production profile for node slot slot.
func DefaultConfig(slot int) Config {
	return Config{
		Slot:            slot,
		RefreshInterval: time.Second,
		ClearDelay:      2 * time.Second,
		SettleTime:      3 * time.Second,
		ChecksumCache:   8 << 20,
	}
}

// FastConfig is a profile for tests and the demo: short intervals.
func FastConfig(slot int) Config {
	return Config{
		Slot:            slot,
		RefreshInterval: 20 * time.Millisecond,
		ClearDelay:      30 * time.Millisecond,
		SettleTime:      50 * time.Millisecond,
		// Small, so that tests evict.
		ChecksumCache: 16 << 10,
	}
}

// Validate checks the fields against each other. The slot is checked
// against the volume's slot count at Open.
func (c Config) Validate() error {
	switch {
	case len(c.Legs) == 0:
		return fmt.Errorf("mirror: config: Legs is empty")
	case len(c.Legs) > MaxLegs:
		return fmt.Errorf("mirror: config: %d Legs, at most %d", len(c.Legs), MaxLegs)
	case c.Slot < NoSlot:
		return fmt.Errorf("mirror: config: Slot %d is negative", c.Slot)
	case c.RefreshInterval <= 0:
		return fmt.Errorf("mirror: config: RefreshInterval must be positive")
	case c.ClearDelay < 0:
		return fmt.Errorf("mirror: config: ClearDelay must not be negative")
	case c.SettleTime < 2*c.RefreshInterval:
		return fmt.Errorf("mirror: config: SettleTime %v must be at least 2 x RefreshInterval (%v) so every node sees a leg change before a resync copies", c.SettleTime, c.RefreshInterval)
	case c.ReadOnly && c.Slot != NoSlot:
		return fmt.Errorf("mirror: config: ReadOnly needs Slot = NoSlot, got Slot %d", c.Slot)
	case c.ChecksumCache < 0:
		return fmt.Errorf("mirror: config: ChecksumCache must not be negative")
	case c.ResyncRate < 0:
		return fmt.Errorf("mirror: config: ResyncRate must not be negative")
	}
	for i, d := range c.Legs {
		if d == nil {
			return fmt.Errorf("mirror: config: Legs[%d] is nil", i)
		}
	}
	return nil
}
