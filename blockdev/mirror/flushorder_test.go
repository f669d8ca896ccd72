package mirror

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shoal-ha/shoal/blockdev"
)

// crashedWriter opens slot 0 with marks that outlive the writes (a node
// that will crash with them set) and no checksum cache (nothing of its
// own to write back when another node takes its locks, as after a real
// crash), and writes a distinct block to each region in regions; the legs
// are flushed after, so only what the test does next is unflushed.
func crashedWriter(t *testing.T, r *rig, regions []int64) *node {
	t.Helper()
	ctx := context.Background()
	crashed, err := r.tryOpen(0, func(c *Config) { c.ClearDelay, c.ChecksumCache = time.Hour, 0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { crashed.vol.Close() })
	for _, reg := range regions {
		x := bytes.Repeat([]byte{byte(0x30 + reg)}, testBS)
		if err := crashed.vol.WriteAt(ctx, x, reg*testRegion); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range r.legs {
		if err := m.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return crashed
}

// legLog records, in order, the writes and flushes one node sends to a
// leg.
type legLog struct {
	blockdev.Device
	mu     sync.Mutex
	events []legEvent
}

type legEvent struct {
	flush    bool
	off, end int64
	// table: a leg table stored (tableLog), with the watched leg's state
	// and resync cursor in it.
	table  bool
	state  LegState
	cursor int64
}

func (l *legLog) add(e legEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *legLog) WriteAt(ctx context.Context, p []byte, off int64) error {
	l.add(legEvent{off: off, end: off + int64(len(p))})
	return l.Device.WriteAt(ctx, p, off)
}

func (l *legLog) Flush(ctx context.Context) error {
	err := l.Device.Flush(ctx)
	l.add(legEvent{flush: true})
	return err
}

func (l *legLog) reset() {
	l.mu.Lock()
	l.events = nil
	l.mu.Unlock()
}

// TestRecoverFlushesBeforeClearingTheSlot: a disk may persist unflushed
// writes in any order, so a recovery may clear a dead node's marks only
// once its copies are durable. On every
// leg, the recovery's write of the slot's bitmap block comes after a flush
// that comes after every write of the recovery to the data and checksum
// areas (the rule clean follows for a live node's marks).
func TestRecoverFlushesBeforeClearingTheSlot(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 2)
	const torn = 5
	crashed := crashedWriter(t, r, []int64{3, torn, 9})
	g := crashed.vol.Geometry()
	r.legs[1].Poke(g.DataOffset+torn*testRegion, bytes.Repeat([]byte{0xee}, testBS))

	var logs []*legLog
	b, err := r.tryOpen(1, func(c *Config) {
		c.RefreshInterval, c.SettleTime = time.Hour, 2*time.Hour
		for i := range c.Legs {
			l := &legLog{Device: c.Legs[i]}
			logs = append(logs, l)
			c.Legs[i] = l
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.vol.Close()
	for _, l := range logs {
		l.reset()
	}
	rep, err := b.vol.Recover(ctx, 0)
	if err != nil || rep.Regions != 3 || !rep.Cleared {
		t.Fatalf("recover: %+v %v, want 3 regions copied and the slot cleared", rep, err)
	}
	bitmap := g.BitmapBlockOffset(0, torn/RegionsPerBitmapBlock)
	for leg, l := range logs {
		l.mu.Lock()
		lastData, flushed, cleared := -1, -1, -1
		for k, e := range l.events {
			switch {
			case e.flush:
				flushed = k
			case e.off <= bitmap && bitmap < e.end:
				cleared = k
			case e.off >= g.ChecksumOffset:
				lastData = k
			}
			if cleared >= 0 {
				break
			}
		}
		l.mu.Unlock()
		if cleared < 0 {
			t.Fatalf("leg %d: the recovery never wrote slot 0's bitmap block", leg)
		}
		if flushed < lastData || flushed < 0 {
			t.Fatalf("leg %d: slot 0's bitmap block written at event %d, the last data or checksum write before it at %d, the last flush at %d", leg, cleared, lastData, flushed)
		}
	}
}

// tableLog adds to a legLog every leg table stored, with what it says of
// one leg.
type tableLog struct {
	LegStateStore
	log *legLog
	leg uuid.UUID
}

func (s tableLog) CompareAndSwap(ctx context.Context, volume uuid.UUID, prev uint64, next LegTable) error {
	err := s.LegStateStore.CompareAndSwap(ctx, volume, prev, next)
	if j := next.Find(s.leg); err == nil && j >= 0 {
		s.log.add(legEvent{table: true, state: next.Legs[j].State, cursor: next.Legs[j].Cursor})
	}
	return err
}

// TestResyncFlushesBeforeRecordingProgress: the leg table in etcd outlives
// a power loss of a leg, so a resync may record a resume cursor, or the
// leg in sync, only once the copies it covers are durable on the leg. A
// new leg's full resync is interrupted (its cursor recorded) and resumed
// to the end; before every table that moves the leg's cursor or puts it in
// sync, the leg was flushed after the last copy written to it.
func TestResyncFlushesBeforeRecordingProgress(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, 1)
	addr := "mem://flushorder"
	_, id := r.addResyncingLeg(addr)
	log := &legLog{}
	var g Geometry
	resync := func(stopAt int64) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		tool, err := r.tryOpen(NoSlot, func(c *Config) {
			open := c.OpenLeg
			c.OpenLeg = func(ctx context.Context, a string) (blockdev.Device, error) {
				d, err := open(ctx, a)
				if err != nil || a != addr {
					return d, err
				}
				log.Device = d
				return log, nil
			}
			c.Store = tableLog{LegStateStore: c.Store, log: log, leg: id}
			c.Progress = func(p Progress) {
				if stopAt > 0 && p.Op == "resync" && p.Done >= stopAt {
					cancel()
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer tool.vol.Close()
		g = tool.vol.Geometry()
		if _, err := tool.vol.Resync(cctx); stopAt > 0 && !errors.Is(err, context.Canceled) || stopAt == 0 && err != nil {
			t.Fatalf("resync stopping at %d: %v", stopAt, err)
		}
	}
	resync(40)
	resync(0)
	log.mu.Lock()
	defer log.mu.Unlock()
	lastCopy, lastFlush, cursor, recorded := -1, -1, int64(0), 0
	for k, e := range log.events {
		switch {
		case e.flush:
			lastFlush = k
		case e.table:
			if e.cursor > cursor || e.state == LegInSync {
				recorded++
				if lastFlush < lastCopy {
					t.Fatalf("event %d: the table records leg 2 %s with cursor %d, but its last copy (event %d) came after its last flush (event %d)", k, e.state, e.cursor, lastCopy, lastFlush)
				}
			}
			cursor = e.cursor
		case e.off >= g.ChecksumOffset:
			lastCopy = k
		}
	}
	if recorded < 2 {
		t.Fatalf("the resyncs recorded the leg's progress %d times, want a cursor and the leg in sync", recorded)
	}
}
