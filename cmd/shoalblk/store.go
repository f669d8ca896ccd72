package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storenode"
)

// The store's commands: mkstore lays a store on a formatted volume (format
// stays the volume's own command: a volume can exist without a store, and
// a store can be laid again on a volume without touching its legs); store
// check checks it.
func addStore(root *cobra.Command) {
	root.AddCommand(mkstoreCommand(), storeCommand())
}

func mkstoreCommand() *cobra.Command {
	vf := volumeFlags{}
	var (
		slot      int
		slots     int
		journal   int
		label     string
		overwrite bool
	)
	c := &cobra.Command{
		Use:   "mkstore LEG...",
		Short: "Lay an empty shared store on a formatted volume",
		Long: `Write a new, empty store (superblock, one journal per node slot, allocation
groups, the root directory) on the volume whose legs are given. The volume
must be formatted (shoalblk format) and no node may be running on it: the
store is written as node slot --slot of the volume. A volume that already
holds a store is refused unless --overwrite is given, which empties it.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			v, closeVol, err := vf.openVolume(ctx, args, slot, false, nil)
			if err != nil {
				return err
			}
			defer closeVol()
			if slots == 0 {
				slots = v.Geometry().Slots
			}
			sb, err := store.Format(ctx, v, store.FormatOptions{Slots: slots, JournalBlocks: journal, Label: label, Overwrite: overwrite})
			if errors.Is(err, store.ErrStoreExists) {
				return fmt.Errorf("%w; --overwrite replaces it with an empty one", err)
			}
			if err != nil {
				return err
			}
			if vf.jsonOut {
				return printJSON(stdout, sb)
			}
			fmt.Fprintf(stdout, "store laid on volume %s: %d node slots, journals of %d blocks, %d allocation groups of %d blocks (%d-byte blocks)\n",
				v.UUID(), sb.Slots, sb.JournalBlocks, sb.AGCount, sb.AGBlocks, store.BlockSize)
			return nil
		},
	}
	c.Flags().IntVar(&slot, "slot", 0, "volume node slot to write as (no running node may use it)")
	c.Flags().IntVar(&slots, "slots", 0, "store node slots, one journal each (default: the volume's slot count)")
	c.Flags().IntVar(&journal, "journal-blocks", 0, "blocks per journal (default: 1/64 of the volume per slot, 256 to 8192)")
	c.Flags().StringVar(&label, "label", "", "a name for operators, at most 64 bytes")
	c.Flags().BoolVar(&overwrite, "overwrite", false, "replace a store already on the volume by an empty one")
	vf.register(c, true)
	return c
}

// storeCommand is "store", the commands that look into a store.
func storeCommand() *cobra.Command {
	storeCmd := &cobra.Command{
		Use:   "store",
		Short: "Look into the shared store on a volume: check, ls, stat, cat, journal",
	}
	var (
		l         storeLook
		on        onlineFlags
		repair    bool
		volSlot   int
		storeSlot int
		forceOpen bool
	)
	check := &cobra.Command{
		Use:   "check (--config FILE | --admin ADDR | LEG...)",
		Short: "Check the store, offline or on a running cluster, or repair it offline; non-zero exit on any problem",
		Long: `Check the store on the volume whose legs are given. Offline (no node has the
store open): every metadata block's header and checksum, the tree (every
directory entry names a live inode of the right generation, every inode is
reached once), extents and allocation bitmaps (no block used twice, none
used and free), and the journals. Every leg is opened read-only and nothing
is written.

On a running cluster give --config (a node's configuration file) or --admin
instead of the LEGs: a node checks the store it has open, through its admin
API (a read-only certificate suffices): the tree, each directory and its
inodes read under shared locks of the cluster's lock manager (the bitmaps
change meanwhile and are not compared). --online with the LEGs and --etcd
does the same as a lock-manager client of its own, for a cluster whose
nodes' admin APIs cannot be reached.

Each problem is printed with its inode, path and block; the exit status is
1 if there is any.

With --repair (offline only, as e2fsck and fsck.gfs2): journals holding
transactions are replayed first (records stay pending for the nodes'
recovery handlers), then what the check finds is fixed: entries naming
missing, removed or wrong-generation inodes are removed, metadata that no
leg holds intact is cut off with what depends on it, link counts and
counts are set, a data block two files share is copied for the later one,
inodes nobody names go to /lost+found as #INO, bitmaps are made to match
the tree. Every repair is printed with its inode, path and block; the
changes go through a store journal and the mirror (every leg), so a repair
cut short is finished by running it again. A volume a node has open (its
open-volume marker) is refused unless --force-while-open is given. Exit
status: 0 nothing to repair, 1 repaired and clean now, 4 problems left,
8 the repair could not run (refused, or the volume or store unreadable).`,
		Args: on.legsOrOnline(),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			if repair {
				if l.online || on.given() {
					return fmt.Errorf("--repair works offline only (no node may have the store open); drop --online")
				}
				return runRepair(cmd, &l.vf, args, volSlot, storeSlot, forceOpen)
			}
			var rep *store.CheckReport
			if on.given() {
				// A check reads the whole tree: bound it by the node's
				// bound, not by the default request timeout.
				on.t.Timeout = storenode.CheckTimeout
				c, err := on.client()
				if err != nil {
					return err
				}
				rep = &store.CheckReport{}
				if err := c.Get(ctx, "/api/store/check", rep); err != nil {
					return apiError(err)
				}
			} else if l.online {
				st, done, err := l.open(ctx)(args)
				if err != nil {
					return err
				}
				defer done()
				if rep, err = st.Check(ctx); err != nil {
					return err
				}
			} else {
				v, closeVol, err := l.vf.openVolume(ctx, args, mirror.NoSlot, false, nil)
				if err != nil {
					return err
				}
				defer closeVol()
				if rep, err = store.CheckDevice(ctx, v); err != nil {
					return err
				}
			}
			if l.vf.jsonOut {
				if err := printJSON(stdout, rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintln(stdout, "problem:", p)
				}
				if len(rep.SlotsDirty) > 0 {
					fmt.Fprintf(stdout, "note: journals of slots %v hold transactions not yet written in place (a node crashed; recovery or the node's next start replays them)\n", rep.SlotsDirty)
				}
				if rep.Truncated {
					fmt.Fprintf(stdout, "note: stopped after %d problems\n", len(rep.Problems))
				}
				fmt.Fprintf(stdout, "checked %d directories and %d files, %d blocks used, %d free: %d problems\n",
					rep.Dirs, rep.Files, rep.UsedBlocks, rep.FreeBlocks, len(rep.Problems))
			}
			if len(rep.Problems) > 0 {
				return fmt.Errorf("%d problems found", len(rep.Problems))
			}
			return nil
		},
	}
	l.register(check)
	on.register(check)
	check.Flags().BoolVar(&repair, "repair", false, "repair what the check finds (offline only; writes through every leg)")
	check.Flags().IntVar(&volSlot, "slot", 0, "with --repair: volume node slot to write as (no running node may use it)")
	check.Flags().IntVar(&storeSlot, "store-slot", -1, "with --repair: store slot whose journal the repair writes through (default: the first with no records pending)")
	check.Flags().BoolVar(&forceOpen, "force-while-open", false, "with --repair: repair even a volume whose open-volume marker says a node has it open (that node's view of the store breaks)")
	storeCmd.AddCommand(check, storeLsCommand(), storeStatCommand(), storeCatCommand(), storeJournalCommand())
	return storeCmd
}
