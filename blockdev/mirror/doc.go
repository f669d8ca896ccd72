// Package mirror is Shoal's shared volume: a RAID-1 mirror over N legs
// (blockdev.Device values: files, block devices, iSCSI LUNs) that every node
// reads and writes at the same time.
//
// Each leg holds, in order: a superblock (volume and leg identity, cluster
// ID, geometry, the leg table and its generation, CRC), one write-intent
// bitmap per node slot, a CRC-32C per data block grouped by region, and the
// data.
//
// Writes lock the byte range they write (RegionLocker; the daemon passes
// the lock manager's region locks), mark its regions in the writer's slot
// bitmap on disk, then go to every in-sync and resyncing leg in parallel;
// the regions' checksum areas are patched under a per-region checksum
// lock. A node keeps the checksum lock of the regions it writes, with the
// area in memory, until another node (or a verify, scrub or copy) asks for
// it through the lock's blocking callback: a 4 KiB write then costs one
// data write per leg. A cached area is written back before its region's
// mark is cleared; until then the mark makes recovery recompute it. A
// write never waits for a checksum lock while it holds its data lock (it
// tries, lets the data lock go and waits, then starts again): a dead
// node's checksum lock is released only after the recovery that needs the
// data lock. A recovery write's checksum lock serves recovery writes only.
// The caller's context bounds a write's waits; once its data goes out, it
// goes to every leg, whatever the caller's deadline. Resync, recovery and
// scrub lock whole regions, and re-read the leg table under that lock
// before copying. Marks are cleared lazily once the data is flushed and
// every leg is in sync. Reads are balanced over the in-sync legs; regions marked
// in another slot's bitmap are read from the primary leg, the source of
// their resync, so every node sees the same bytes. A leg that fails is
// marked failed cluster-wide through the LegStateStore (etcd in
// production, see etcdstate) and in the superblocks, and the volume serves
// degraded; its missed writes stay marked until a resync copies them.
//
// The leg table never goes back: Open follows the legs each table names to
// the newest table, so a removed or lagging leg can never publish its older
// one. A node's slot bitmap carries an open-volume marker from Open to
// Close (cleared also by the recovery of its slot); Format and AddLeg
// refuse the legs of a volume a node has open (ErrVolumeOpen). A volume
// opened with Config.ReadOnly writes nothing at all: the operator's
// inspect, status and check use it.
//
// The decisions are plain code a test can drive: the intent type (which
// marks to write and clear), decideBlock (which copy a scrub keeps) and
// the leg-table transitions. Goroutines, clocks and disks sit around them.
//
// Usage:
//
//	legs := []blockdev.Device{leg0, leg1}
//	if _, err := mirror.Format(ctx, legs, mirror.FormatOptions{RegionSize: 1 << 20, Slots: 8, ClusterID: "web"}); err != nil {
//		return err
//	}
//	cfg := mirror.DefaultConfig(mySlot)
//	cfg.Legs, cfg.Logger = legs, logger
//	cfg.Store = etcdstate.New(etcdClient, "/shoal") // cluster-wide leg states
//	cfg.Locker = regionLocks                        // the lock manager's region locks
//	vol, err := mirror.Open(ctx, cfg)               // recovers this slot's own dirty regions
//	if err != nil {
//		return err
//	}
//	defer vol.Close()
//	err = vol.WriteAt(ctx, block, 0)
//
//	// After node 3 crashed and was fenced, the recovery coordinator:
//	rep, err := vol.Recover(ctx, 3)
//
//	// Operators and tests check the invariants:
//	vr, err := vol.Verify(ctx) // vr.Problems lists leg, region and offset
package mirror
