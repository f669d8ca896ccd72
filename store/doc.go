// Package store is Shoal's shared file tree: one tree on the mirrored
// volume that every node reads and changes at once, with a journal per
// node slot, allocation groups that nodes allocate from in parallel, and
// caches kept coherent by the lock manager. GFS2 and OCFS2 are the models.
//
// # Layout
//
// Blocks are BlockSize (4 KiB). Block 0 is the superblock; then one
// journal per slot; then the allocation groups, each starting with a
// header that holds its free-space bitmap and counters and guarded by a
// lock of its own (GFS2's resource groups). A node allocates in its own
// groups first (chosen by slot) and, when they are full, in groups no
// other node holds before any it would have to take from another node.
// An inode is one block (its
// number is its block number) with a generation that changes when the
// block is reused; small files keep their data inline in it, larger ones
// an extent list (overflowing into chained extent blocks); a directory
// hashes names into 256 buckets of chained leaf blocks, so a lookup reads
// one short chain even at 100,000 entries. Every metadata block starts
// with a self-describing header: kind, its own block number, owning inode
// and generation, and a CRC-32C; a damaged block is named with its inode
// and path by Check and in read errors. A node allocates around an
// allocation group whose header is damaged (logging it) until a repair.
//
// # Transactions
//
// Every change is a transaction of the writer's slot: the new images of
// the metadata blocks it changes, the application records it logs, and a
// commit block with a CRC-32C over all of it go to the journal and are
// flushed before anything goes in place. A commit waits for the journal
// alone: its images stay in the node's memory (where its own reads find
// them) until a checkpoint writes them in place, as JBD2's and GFS2's
// logs do, so a block many transactions change is written once per
// checkpoint. A node checkpoints before it hands on a lock whose blocks
// are among them, when its journal fills, and every
// Config.CheckpointInterval. A block freed and written again as file data
// before a checkpoint passed the free waits for that checkpoint, so
// neither it nor a replay writes the block's older journaled image over
// the new data (what JBD2's revoke records are for). File data is written
// copy on write to newly allocated blocks and flushed before the commit
// that points to it, so a crash leaves a file's previous contents or its
// new ones, never stale or another file's bytes. A file's writes commit on
// Sync and Close (durable when they return). Rename is one transaction,
// also across directories, and replaces an existing target atomically:
// writing a temporary file and renaming it over the old one publishes it.
//
// # Locks and coherence
//
// Inodes (with their directory leaves and extent blocks), allocation
// groups and journal slots are guarded by lock-manager locks, PR to read
// and cache and EX to change, as GFS2's glocks. A node keeps a lock it was
// granted until another node's request makes the lock manager call back
// (Lock.Blocking); then it checkpoints its journal if it changed anything
// under the lock, publishes a new generation in the lock's value block and
// releases. A node that gets a lock back compares the generation with its
// cache's: equal means the cached blocks are still good, with no reading.
// An operation costs at most one lock round trip per lock it has not
// cached, none when cached. Locks are taken in one order (inodes by
// number, then allocation groups); one that would be taken out of order
// is only tried, and if it would wait the transaction starts over with it
// taken first. Before every write the grant's Use checks that the node is
// not fenced.
//
// # Recovery
//
// A node that dies leaves its journal: the recovery coordinator calls
// ReplaySlot, which under a recovery lock on the slot writes the committed
// transactions in place and hands the slot's unacknowledged application
// records (Tx.Log) to the handlers registered with Handle, in journal
// order, each in a transaction of the coordinator's own slot that also
// advances the dead slot's replay cursor, so each record is handled
// exactly once even if the coordinator dies too. Replay is idempotent. A
// node that opens its slot after its own crash, with nobody having
// recovered it, replays it first. The replay decisions are made by a
// deterministic core, ReplayPlan.
//
// # Checking and repair
//
// Check walks the tree online under PR locks while nodes keep working;
// CheckDevice checks it offline, bitmaps and journals included. Repair
// (offline, as e2fsck and fsck.gfs2) replays dirty journals, then fixes
// what the check finds: it is split into a scan that decides (no writes)
// and journal transactions of one slot that write the fixes, so a repair
// cut short is finished by the next. Every problem and every repair names
// block, inode and path.
//
// # Use
//
//	_, err := store.Format(ctx, dev, store.FormatOptions{Slots: 3})
//	st, err := store.Open(ctx, store.DefaultConfig(dev, slot, locks))
//	defer st.Close()
//	err = st.WriteFile("site/index.html", page, 0o644)
//	http.Handle("/", http.FileServer(http.FS(st)))
//	err = st.Update(ctx, func(tx *store.Tx) error {
//		id, err := tx.Log("intent", key)
//		...
//		return tx.WriteFile("sessions/"+sid, state, 0o600)
//	})
package store
