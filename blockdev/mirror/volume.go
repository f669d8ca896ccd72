package mirror

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Volume is a RAID-1 mirror over N legs, shared by every node. It is a
// blockdev.Device: byte 0 of the volume is the start of each leg's data
// area. Safe for concurrent use.
type Volume struct {
	cfg     Config
	log     hclog.Logger
	clk     clock.Clock
	geo     Geometry
	vol     uuid.UUID
	lockNS  string // region-lock namespace: the volume UUID
	cluster string
	store   LegStateStore
	locker  RegionLocker

	tabMu sync.Mutex // serialises leg-table changes
	view  atomic.Pointer[view]
	owned map[uuid.UUID]blockdev.Device // legs opened by the volume itself
	given []blockdev.Device

	stateMu   sync.Mutex // guards in
	in        *intent
	bmWriteMu sync.Mutex // serialises writes of this slot's bitmap blocks
	foreign   atomic.Pointer[Bitmap]
	csums     *csumCache // nil: every write rewrites its checksum areas
	dholds    *dataHolds // nil: every ordered write takes its region lock

	rr      atomic.Uint64
	lastEnd atomic.Int64 // end of the last write, to spot streams
	// Read balancing: where the last read ended and which leg served it,
	// and reads in flight per leg (by table index).
	lastReadEnd   atomic.Int64
	lastReadLeg   atomic.Int64
	readsInFlight [MaxLegs]atomic.Int64
	progress      atomic.Pointer[Progress]

	notes []string // what Open found; see Notes

	failMu   sync.Mutex
	failSeen map[uuid.UUID]time.Time // when this node first saw a leg failed

	closed atomic.Bool
	opened atomic.Bool // Open finished: the own slot is live
	stop   chan struct{}
	bgDone chan struct{}
	ioMu   sync.RWMutex // held shared by every I/O call, exclusively by Close
}

// view is an immutable snapshot of the leg table and the devices; I/O takes
// one and never locks.
type view struct {
	table    LegTable
	devs     []blockdev.Device // per table leg; nil when not available
	inSync   []int             // table indexes of in-sync legs with a device
	writable []int             // in-sync and resyncing legs with a device
	failed   bool              // some leg of the table is failed
}

func newView(t LegTable, devOf func(uuid.UUID) blockdev.Device) *view {
	v := &view{table: t, devs: make([]blockdev.Device, len(t.Legs))}
	for i, l := range t.Legs {
		if l.State == LegFailed {
			v.failed = true
			continue
		}
		d := devOf(l.UUID)
		v.devs[i] = d
		if d == nil {
			continue
		}
		v.writable = append(v.writable, i)
		if l.State == LegInSync {
			v.inSync = append(v.inSync, i)
		}
	}
	return v
}

func (w *view) allInSync() bool {
	return len(w.inSync) == len(w.table.Legs)
}

// Open attaches to a formatted volume. It reads every given leg's
// superblock, refuses legs of another volume and stale legs, reconciles the
// leg table with the store, recovers this slot's own dirty regions (left by
// a crash of the previous holder of the slot) and starts background work.
//
// The leg table never goes back: Open follows the legs each table names
// (opening them by their recorded addresses) until no reachable leg holds
// a newer table, so the order of the given legs and which of them comes
// first do not matter. A leg holding an older table is stale: it is listed
// in Notes and its table is never published; a given leg the newest table
// no longer lists is refused with ErrStaleLeg.
//
// With Config.ReadOnly, Open and every later call write nothing to any leg
// or store: missing legs stay missing (not failed), lagging superblocks are
// reported, not refreshed.
func Open(ctx context.Context, cfg Config) (*Volume, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.Locker == nil {
		cfg.Locker = NewLocalLocker()
	}
	if cfg.OpenLeg == nil {
		cfg.OpenLeg = func(ctx context.Context, addr string) (blockdev.Device, error) {
			return blockdev.Open(ctx, addr, blockdev.OpenOptions{Logger: cfg.Logger, ReadOnly: cfg.ReadOnly})
		}
	}
	sbs := make([]Superblock, len(cfg.Legs))
	for i, d := range cfg.Legs {
		sb, err := readSuperblock(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("mirror: leg %d: %w", i, err)
		}
		sbs[i] = sb
	}
	ref := sbs[0]
	bySelf := map[uuid.UUID]blockdev.Device{}
	for i, sb := range sbs {
		if sb.Volume != ref.Volume {
			return nil, fmt.Errorf("%w: leg %d belongs to volume %s (cluster %q), leg 0 to volume %s (cluster %q)", ErrForeignLeg, i, sb.Volume, sb.ClusterID, ref.Volume, ref.ClusterID)
		}
		if sb.Geometry != ref.Geometry {
			return nil, fmt.Errorf("%w: leg %d's geometry differs from leg 0's", ErrBadSuperblock, i)
		}
		if bySelf[sb.Self] != nil {
			return nil, fmt.Errorf("mirror: leg %d is the same leg (%s) as another given leg", i, sb.Self)
		}
		bySelf[sb.Self] = cfg.Legs[i]
	}
	if cfg.Slot >= ref.Geometry.Slots {
		return nil, fmt.Errorf("mirror: slot %d out of range: volume has %d node slots", cfg.Slot, ref.Geometry.Slots)
	}
	v := &Volume{
		cfg: cfg, log: cfg.Logger.With("volume", ref.Volume.String(), "slot", cfg.Slot), clk: cfg.Clock,
		geo: ref.Geometry, vol: ref.Volume, lockNS: ref.Volume.String(), cluster: ref.ClusterID,
		store: cfg.Store, locker: cfg.Locker, owned: map[uuid.UUID]blockdev.Device{}, given: cfg.Legs,
		in: newIntent(ref.Geometry.Regions, recallFactor*cfg.ClearDelay), stop: make(chan struct{}), bgDone: make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			for _, d := range v.owned {
				d.Close()
			}
		}
	}()
	found := newTableSearch(sbs, bySelf)
	found.follow(ctx, v, found.newest)
	newest := found.newest
	table := newest
	// Several nodes may open the volume at once and race to publish the
	// superblocks' table: the loser reloads and takes the winner's. A
	// read-only volume takes the newer of the two and publishes nothing.
	for attempt := 0; cfg.Store != nil; attempt++ {
		stored, ok, err := cfg.Store.Load(ctx, ref.Volume)
		if err != nil {
			return nil, fmt.Errorf("mirror: load leg table: %w", err)
		}
		if ok && stored.Generation >= newest.Generation {
			table = stored
			break
		}
		if cfg.ReadOnly {
			if ok {
				v.notes = append(v.notes, fmt.Sprintf("the leg state store holds leg table generation %d, older than generation %d on the legs", stored.Generation, newest.Generation))
			}
			break
		}
		var prev uint64
		if ok {
			prev = stored.Generation
		}
		err = cfg.Store.CompareAndSwap(ctx, ref.Volume, prev, newest)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrConflict) || attempt >= 10 {
			return nil, fmt.Errorf("mirror: publish leg table: %w", err)
		}
	}
	if table.Generation > newest.Generation {
		// The store's table may name legs the superblocks did not.
		found.follow(ctx, v, table)
	}
	if v.store == nil {
		v.store = &superblockStore{v: v}
	}
	if h, ok := cfg.Locker.(RegionHolder); ok && cfg.Slot != NoSlot && cfg.ChecksumCache > 0 {
		v.csums = newCsumCache(v, h, cfg.ChecksumCache)
		// As many region holds as checksum areas: the regions written.
		v.dholds = newDataHolds(v, h, v.csums.max)
	}
	for i, sb := range sbs {
		if table.Find(sb.Self) < 0 {
			addr := ""
			if j := sb.Table.Find(sb.Self); j >= 0 {
				addr = " " + sb.Table.Legs[j].Addr
			}
			return nil, fmt.Errorf("%w: given leg %d (%s%s) was removed from volume %s: it holds leg table generation %d, the newest table (generation %d, found on %s) does not list it; nothing was changed", ErrStaleLeg, i, sb.Self, addr, sb.Volume, sb.Table.Generation, table.Generation, found.where(table))
		}
		if l := table.Legs[table.Find(sb.Self)]; l.State == LegFailed && sb.Table.Generation < table.Generation {
			v.log.Info("stale leg will not serve data until resynced", "leg", i, "leg_uuid", sb.Self, "leg_generation", sb.Table.Generation, "generation", table.Generation)
		}
	}
	v.notes = append(v.notes, found.stale(table)...)
	// Legs the search opened are used when the table counts them live,
	// closed otherwise.
	for id, d := range v.owned {
		if j := table.Find(id); j < 0 || table.Legs[j].State == LegFailed {
			d.Close()
			delete(v.owned, id)
			continue
		}
		bySelf[id] = d
	}
	var missing []int
	for i, l := range table.Legs {
		if l.State == LegFailed || bySelf[l.UUID] != nil {
			continue
		}
		// A live leg that was not given is opened by its address.
		if !found.tried[l.UUID] {
			if d := v.openRecorded(ctx, l); d != nil {
				bySelf[l.UUID] = d
				v.owned[l.UUID] = d
				continue
			}
		}
		missing = append(missing, i)
	}
	if len(missing) > 0 && !cfg.AllowMissingLegs {
		var names []string
		for _, i := range missing {
			names = append(names, fmt.Sprintf("%d (%s %s)", i, table.Legs[i].UUID, table.Legs[i].Addr))
		}
		return nil, fmt.Errorf("%w: table generation %d lists legs %v as %s but they were not given", ErrMissingLeg, table.Generation, names, "live")
	}
	v.view.Store(newView(table, func(id uuid.UUID) blockdev.Device { return bySelf[id] }))
	if len(v.view.Load().inSync) == 0 && len(missing) == 0 {
		return nil, fmt.Errorf("%w: no given leg is in sync at generation %d", ErrStaleLeg, table.Generation)
	}
	if cfg.ReadOnly {
		for _, i := range missing {
			v.notes = append(v.notes, fmt.Sprintf("leg %d (%s %s) is %s in the table but was not given nor found at its address; it was not checked and not changed", i, table.Legs[i].UUID, table.Legs[i].Addr, table.Legs[i].State))
		}
		if err := v.refreshForeign(ctx); err != nil {
			return nil, err
		}
		ok = true
		v.opened.Store(true)
		close(v.bgDone)
		return v, nil
	}
	for _, i := range missing {
		id := table.Legs[i].UUID
		v.log.Warn("leg not given, failing it", "leg", i, "leg_uuid", id)
		if err := v.updateTable(ctx, func(t *LegTable) error {
			if j := t.Find(id); j >= 0 && t.Legs[j].State != LegFailed {
				if t.Legs[j].State == LegInSync && t.InSync() == 1 {
					return fmt.Errorf("%w: leg %d (%s) is missing", ErrLastInSyncLeg, j, id)
				}
				t.Legs[j].State = LegFailed
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	// Bring superblocks of live legs up to the table (a torn update, or
	// a table changed in the store while this leg's superblock lagged).
	w := v.view.Load()
	for _, i := range w.writable {
		sb, ok := found.sbs[w.table.Legs[i].UUID]
		if !ok {
			var err error
			if sb, err = readSuperblock(ctx, w.devs[i]); err != nil {
				return nil, fmt.Errorf("mirror: leg %d: %w", i, err)
			}
		}
		if sb.Table.Generation < w.table.Generation {
			v.log.Info("superblock lags the leg table; rewriting it", "leg", i, "leg_generation", sb.Table.Generation, "generation", w.table.Generation)
		}
		if sb.Table.Generation != w.table.Generation {
			if err := writeSuperblock(ctx, w.devs[i], v.superblock(w.table, w.table.Legs[i].UUID)); err != nil {
				return nil, fmt.Errorf("mirror: refresh superblock of leg %d: %w", i, err)
			}
		}
	}
	if err := v.refreshForeign(ctx); err != nil {
		return nil, err
	}
	if cfg.Slot != NoSlot {
		if _, err := v.Recover(ctx, cfg.Slot); err != nil {
			return nil, fmt.Errorf("mirror: recover own slot %d: %w", cfg.Slot, err)
		}
		if err := v.writeOpenMarker(ctx); err != nil {
			return nil, fmt.Errorf("mirror: mark slot %d open: %w", cfg.Slot, err)
		}
	}
	ok = true
	v.opened.Store(true)
	go v.background()
	return v, nil
}

// tableSearch collects the superblocks Open can reach: the given legs and
// the legs the tables name, opened by their recorded addresses.
type tableSearch struct {
	sbs    map[uuid.UUID]Superblock // by leg UUID
	given  map[uuid.UUID]bool
	tried  map[uuid.UUID]bool // opened (or tried) by recorded address
	newest LegTable
	from   uuid.UUID // leg holding newest
}

func newTableSearch(sbs []Superblock, bySelf map[uuid.UUID]blockdev.Device) *tableSearch {
	s := &tableSearch{sbs: map[uuid.UUID]Superblock{}, given: map[uuid.UUID]bool{}, tried: map[uuid.UUID]bool{}}
	for _, sb := range sbs {
		s.add(sb)
		s.given[sb.Self] = true
	}
	return s
}

func (s *tableSearch) add(sb Superblock) bool {
	s.sbs[sb.Self] = sb
	if len(s.newest.Legs) == 0 || sb.Table.Generation > s.newest.Generation {
		s.newest, s.from = sb.Table, sb.Self
		return true
	}
	return false
}

// follow opens the live legs of t that were neither given nor opened yet,
// and of every newer table found on them, until no newer table turns up.
// Bounded: each leg is tried once and a volume has at most MaxLegs legs
// per table.
func (s *tableSearch) follow(ctx context.Context, v *Volume, t LegTable) {
	for {
		newer := false
		for _, l := range t.Legs {
			if l.State == LegFailed || s.given[l.UUID] || s.tried[l.UUID] {
				continue
			}
			s.tried[l.UUID] = true
			d := v.openRecorded(ctx, l)
			if d == nil {
				continue
			}
			v.owned[l.UUID] = d
			sb, err := readSuperblock(ctx, d)
			if err != nil {
				continue
			}
			if s.add(sb) {
				newer = true
			}
		}
		if !newer {
			return
		}
		t = s.newest
	}
}

// where names the leg holding table t, for messages.
func (s *tableSearch) where(t LegTable) string {
	if t.Generation != s.newest.Generation {
		return "the leg state store"
	}
	if j := t.Find(s.from); j >= 0 {
		return fmt.Sprintf("leg %d (%s %s)", j, s.from, t.Legs[j].Addr)
	}
	return "leg " + s.from.String()
}

// stale lists the legs that hold a table older than t.
func (s *tableSearch) stale(t LegTable) []string {
	var out []string
	for id, sb := range s.sbs {
		if sb.Table.Generation >= t.Generation {
			continue
		}
		name := id.String()
		if j := t.Find(id); j >= 0 {
			name = fmt.Sprintf("leg %d (%s %s, %s)", j, id, t.Legs[j].Addr, t.Legs[j].State)
		} else if j := sb.Table.Find(id); j >= 0 {
			name = fmt.Sprintf("removed leg %s (%s)", id, sb.Table.Legs[j].Addr)
		}
		out = append(out, fmt.Sprintf("%s holds stale leg table generation %d; the table is at generation %d", name, sb.Table.Generation, t.Generation))
	}
	sort.Strings(out)
	return out
}

// Notes are what Open found that an operator should know: legs holding a
// stale leg table, and (read-only) legs missing or a store that lags.
func (v *Volume) Notes() []string { return append([]string(nil), v.notes...) }

// openRecorded opens a leg by the address in the leg table and checks that
// it is that leg; nil if that fails.
func (v *Volume) openRecorded(ctx context.Context, l LegInfo) blockdev.Device {
	if l.Addr == "" {
		return nil
	}
	d, err := v.cfg.OpenLeg(ctx, l.Addr)
	if err != nil {
		v.log.Warn("cannot open leg by its recorded address", "addr", l.Addr, "error", err)
		return nil
	}
	sb, err := readSuperblock(ctx, d)
	if err != nil || sb.Volume != v.vol || sb.Self != l.UUID {
		v.log.Warn("device at recorded address is not the leg", "addr", l.Addr, "error", err)
		d.Close()
		return nil
	}
	return d
}

func readSuperblock(ctx context.Context, d blockdev.Device) (Superblock, error) {
	if d.Size() < SuperblockSize || SuperblockSize%d.BlockSize() != 0 {
		return Superblock{}, fmt.Errorf("%w: device of %d bytes with block size %d cannot hold a superblock", ErrBadSuperblock, d.Size(), d.BlockSize())
	}
	b := make([]byte, SuperblockSize)
	if err := d.ReadAt(ctx, b, 0); err != nil {
		return Superblock{}, fmt.Errorf("read superblock: %w", err)
	}
	sb, err := DecodeSuperblock(b)
	if err != nil {
		return sb, err
	}
	if d.Size() < sb.Geometry.LegSize() {
		return sb, fmt.Errorf("%w: leg has %d bytes, the volume needs %d", ErrBadGeometry, d.Size(), sb.Geometry.LegSize())
	}
	return sb, nil
}

// ReadSuperblock reads and checks the superblock of one leg.
func ReadSuperblock(ctx context.Context, d blockdev.Device) (Superblock, error) {
	return readSuperblock(ctx, d)
}

func (v *Volume) superblock(t LegTable, self uuid.UUID) Superblock {
	return Superblock{Version: SuperblockVersion, Volume: v.vol, Self: self, ClusterID: v.cluster, Geometry: v.geo, Table: t}
}

// UUID is the volume's identity.
func (v *Volume) UUID() uuid.UUID { return v.vol }

// Geometry is the volume's on-disk layout.
func (v *Volume) Geometry() Geometry { return v.geo }

// Size is the volume's size in bytes.
func (v *Volume) Size() int64 { return v.geo.VolumeSize() }

// BlockSize is the volume's block size.
func (v *Volume) BlockSize() int { return v.geo.BlockSize }

// LegDevices returns the devices of the legs that are not failed, by leg
// index; fencing uses them for persistent reservations on every leg.
func (v *Volume) LegDevices() map[int]blockdev.Device {
	w := v.view.Load()
	out := map[int]blockdev.Device{}
	for _, i := range w.writable {
		out[i] = w.devs[i]
	}
	return out
}

// Table is the current leg table.
func (v *Volume) Table() LegTable { return v.view.Load().table.Clone() }

// updateTable applies fn to a copy of the leg table, bumps the generation,
// stores it with compare-and-swap (reloading on conflict) and writes the
// superblocks of the live legs.
func (v *Volume) updateTable(ctx context.Context, fn func(t *LegTable) error) error {
	return v.updateTableWith(ctx, nil, fn)
}

func (v *Volume) updateTableWith(ctx context.Context, extra map[uuid.UUID]blockdev.Device, fn func(t *LegTable) error) error {
	if v.cfg.ReadOnly {
		return ErrReadOnly
	}
	v.tabMu.Lock()
	defer v.tabMu.Unlock()
	if tl, ok := v.store.(tableLocker); ok {
		unlock, err := tl.lockTable(ctx)
		if err != nil {
			return fmt.Errorf("mirror: lock leg table: %w", err)
		}
		defer unlock()
	}
	for attempt := 0; attempt < 8; attempt++ {
		cur := v.view.Load()
		next := cur.table.Clone()
		if err := fn(&next); err != nil {
			return err
		}
		if reflect.DeepEqual(next.Legs, cur.table.Legs) && len(extra) == 0 {
			return nil // nothing changes: the generation stays
		}
		next.Generation = cur.table.Generation + 1
		if err := next.Validate(); err != nil {
			return err
		}
		err := v.store.CompareAndSwap(ctx, v.vol, cur.table.Generation, next)
		if errors.Is(err, ErrConflict) {
			t, ok, lerr := v.store.Load(ctx, v.vol)
			if lerr != nil {
				return lerr
			}
			if ok && t.Generation > cur.table.Generation {
				v.adoptLocked(ctx, t, nil)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("mirror: store leg table: %w", err)
		}
		v.adoptLocked(ctx, next, extra)
		w := v.view.Load()
		for _, i := range w.writable {
			if err := writeSuperblock(ctx, w.devs[i], v.superblock(next, next.Legs[i].UUID)); err != nil {
				v.log.Warn("superblock write failed", "leg", i, "error", err)
			}
		}
		v.log.Info("leg table changed", "generation", next.Generation, "legs", describe(next))
		return nil
	}
	return fmt.Errorf("%w: gave up after 8 attempts", ErrConflict)
}

func describe(t LegTable) string {
	s := ""
	for i, l := range t.Legs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%d:%s", i, l.State)
	}
	return s
}

// adoptLocked installs table t, finding devices among the given legs, the
// legs the volume opened itself, extra, or by opening the leg's address.
// Called with tabMu held.
func (v *Volume) adoptLocked(ctx context.Context, t LegTable, extra map[uuid.UUID]blockdev.Device) {
	old := v.view.Load()
	devOf := func(id uuid.UUID) blockdev.Device {
		if i := old.table.Find(id); i >= 0 && old.devs[i] != nil {
			return old.devs[i]
		}
		if d := extra[id]; d != nil {
			v.owned[id] = d
			return d
		}
		if d := v.owned[id]; d != nil {
			return d
		}
		for _, d := range v.given {
			if sb, err := readSuperblock(ctx, d); err == nil && sb.Self == id {
				return d
			}
		}
		i := t.Find(id)
		if t.Legs[i].Addr == "" {
			return nil
		}
		d, err := v.cfg.OpenLeg(ctx, t.Legs[i].Addr)
		if err != nil {
			v.log.Error("cannot open leg named in the leg table", "addr", t.Legs[i].Addr, "error", err)
			return nil
		}
		v.owned[id] = d
		return d
	}
	nv := newView(t, devOf)
	v.noteFailures(old, nv)
	v.view.Store(nv)
}

// noteFailures records when this node first saw each leg failed.
func (v *Volume) noteFailures(old, nv *view) {
	v.failMu.Lock()
	defer v.failMu.Unlock()
	if v.failSeen == nil {
		v.failSeen = map[uuid.UUID]time.Time{}
	}
	for _, l := range nv.table.Legs {
		if l.State != LegFailed {
			delete(v.failSeen, l.UUID)
			continue
		}
		if _, ok := v.failSeen[l.UUID]; ok {
			continue
		}
		if old != nil {
			if i := old.table.Find(l.UUID); i >= 0 && old.table.Legs[i].State == LegFailed {
				// Failed before this volume opened or adopted:
				// everyone has had time to see it.
				v.failSeen[l.UUID] = time.Time{}
				continue
			}
		}
		v.failSeen[l.UUID] = v.now()
	}
}

// awaitFailureSeen delays the acknowledgement of a write that skipped a
// leg failed less than SettleTime ago, until every node has had time to
// see the failure: until then a node with the old view may still read
// that leg, and must not be able to read stale data for a write that is
// already acknowledged.
func (v *Volume) awaitFailureSeen(ctx context.Context, w *view) error {
	if !w.failed {
		return nil // the common case: nothing to look up
	}
	var latest time.Time
	v.failMu.Lock()
	for _, l := range w.table.Legs {
		if l.State == LegFailed {
			if t := v.failSeen[l.UUID]; t.After(latest) {
				latest = t
			}
		}
	}
	v.failMu.Unlock()
	if latest.IsZero() {
		return nil
	}
	wait := latest.Add(v.cfg.SettleTime).Sub(v.now())
	if wait <= 0 {
		return nil
	}
	select {
	case <-v.clk.After(wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refreshTable adopts a newer leg table from the store.
func (v *Volume) refreshTable(ctx context.Context) error {
	t, ok, err := v.store.Load(ctx, v.vol)
	if err != nil || !ok {
		return err
	}
	if t.Generation <= v.view.Load().table.Generation {
		return nil
	}
	v.tabMu.Lock()
	defer v.tabMu.Unlock()
	if t.Generation > v.view.Load().table.Generation {
		v.adoptLocked(ctx, t, nil)
		v.log.Info("adopted leg table", "generation", t.Generation, "legs", describe(t))
	}
	return nil
}

// Refresh re-reads the leg table and the other slots' bitmaps now instead
// of waiting for the next RefreshInterval.
func (v *Volume) Refresh(ctx context.Context) error {
	if err := v.refreshTable(ctx); err != nil {
		return err
	}
	return v.refreshForeign(ctx)
}

func (v *Volume) background() {
	defer close(v.bgDone)
	t := v.clk.NewTicker(v.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C():
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-v.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := v.Refresh(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("refresh failed", "error", err)
		}
		if err := v.clean(ctx, false); err != nil && ctx.Err() == nil {
			v.log.Warn("bitmap clearing failed", "error", err)
		}
		cancel()
	}
}

// Close flushes, clears this slot's bitmap when every leg is in sync, and
// closes the legs.
func (v *Volume) Close() error {
	if v.closed.Swap(true) {
		return nil
	}
	close(v.stop)
	<-v.bgDone
	v.ioMu.Lock() // waits for I/O in flight; later calls see closed
	defer v.ioMu.Unlock()
	ctx := context.Background()
	var err error
	if v.cfg.Slot != NoSlot {
		err = v.clean(ctx, true)
		// closed is set: the marker goes.
		if merr := v.writeOpenMarker(ctx); merr != nil && err == nil {
			err = merr
		}
	}
	if v.dholds != nil {
		v.dholds.close()
	}
	if v.csums != nil {
		// Before the legs close: the watchers may still write back.
		if cerr := v.csums.close(ctx); cerr != nil && err == nil {
			err = cerr
		}
	}
	w := v.view.Load()
	if v.cfg.ReadOnly {
		w = &view{}
	}
	for _, i := range w.writable {
		if ferr := w.devs[i].Flush(ctx); ferr != nil && err == nil {
			err = ferr
		}
	}
	for _, d := range v.given {
		d.Close()
	}
	for _, d := range v.owned {
		d.Close()
	}
	return err
}

// enter admits an I/O call; exit must follow unless it returns an error.
func (v *Volume) enter() error {
	v.ioMu.RLock()
	if v.closed.Load() {
		v.ioMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (v *Volume) exit() { v.ioMu.RUnlock() }

func (v *Volume) now() time.Time { return v.clk.Now() }

// isLegFault says whether err means the leg itself is broken (fail it), as
// opposed to cancellation, fencing, or misuse.
func isLegFault(err error) bool {
	// A fenced node's refused I/O says nothing about the leg: the leg is
	// doing its job. Failing it would let a dead node degrade the volume.
	if errors.Is(err, blockdev.ErrFenced) || errors.Is(err, blockdev.ErrReservationConflict) {
		return false
	}
	return errors.Is(err, blockdev.ErrIO) || errors.Is(err, blockdev.ErrWriteOutcomeUnknown) || errors.Is(err, blockdev.ErrClosed)
}

// failLeg marks a leg failed cluster-wide after an I/O error. The last
// in-sync leg is never failed: the error goes to the caller instead.
func (v *Volume) failLeg(ctx context.Context, id uuid.UUID, cause error) error {
	if ctx.Err() != nil {
		ctx = context.Background()
	}
	return v.updateTable(ctx, func(t *LegTable) error {
		i := t.Find(id)
		if i < 0 || t.Legs[i].State == LegFailed {
			return nil
		}
		if t.Legs[i].State == LegInSync && t.InSync() == 1 {
			return fmt.Errorf("%w: leg %d failed: %v", ErrNoInSyncLeg, i, cause)
		}
		v.log.Error("leg failed", "leg", i, "leg_uuid", id, "error", cause)
		t.Legs[i].State = LegFailed
		t.Legs[i].Cursor = 0
		return nil
	})
}

// parallel runs fn for every leg index in idx at once and returns the errors
// in the same order.
func parallel(idx []int, fn func(i int) error) []error {
	errs := make([]error, len(idx))
	if len(idx) == 1 {
		errs[0] = fn(idx[0])
		return errs
	}
	var wg sync.WaitGroup
	for k, i := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = fn(i)
		}()
	}
	wg.Wait()
	return errs
}

// settle handles the per-leg outcome of an operation on w's legs idx. A
// leg with a fault is failed cluster-wide; the operation succeeds only if
// at least one in-sync leg succeeded and every leg that did not is
// recorded as failed. Otherwise a write is not acknowledged: a leg that
// may lack it would still be read from (or be the resync source).
func (v *Volume) settle(ctx context.Context, w *view, idx []int, errs []error, what string) error {
	okInSync := 0
	var result error
	for k, i := range idx {
		err := errs[k]
		if err == nil {
			if w.table.Legs[i].State == LegInSync {
				okInSync++
			}
			continue
		}
		if !isLegFault(err) {
			if result == nil {
				result = fmt.Errorf("mirror: %s: leg %d: %w", what, i, err)
			}
			continue
		}
		if ferr := v.failLeg(ctx, w.table.Legs[i].UUID, err); ferr != nil {
			v.log.Error("cannot record leg failure", "leg", i, "error", ferr)
			if result == nil {
				if errors.Is(ferr, ErrNoInSyncLeg) {
					result = ferr
				} else {
					result = fmt.Errorf("%w: %s: leg %d failed (%v) and the failure could not be recorded: %v", ErrNoInSyncLeg, what, i, err, ferr)
				}
			}
		}
	}
	if result != nil {
		return result
	}
	if okInSync == 0 {
		return fmt.Errorf("%w: %s", ErrNoInSyncLeg, what)
	}
	return nil
}
