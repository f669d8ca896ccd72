package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

func addCheck(root *cobra.Command) {
	vf := volumeFlags{readOnly: true}
	c := &cobra.Command{
		Use:   "check LEG...",
		Short: "Verify the volume read-only; non-zero exit on any inconsistency",
		Long: `Check superblocks, bitmaps, that every in-sync leg holds the same data and
that every block matches its checksum. Each problem is printed with its leg,
region and offset; the exit status is 1 if there is any. Every leg is opened
read-only and nothing is written (scrub --repair and resync are the
commands that repair).

A region marked dirty by a slot may hold data whose checksums its writer
had not written back, or differ between legs, until that slot's recovery
resyncs it (a node that stopped without quorum leaves its marks so, and
its next start recovers them). Without --lock-dir, nothing asks a writer to
write back first, so such problems are printed as "pending" and do not set
the exit status; with --lock-dir the nodes sharing the lock directory write
back before each region is compared, and every problem counts.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			p := newProgress(cmd.ErrOrStderr(), vf.jsonOut)
			v, closeVol, err := vf.openVolume(ctx, args, mirror.NoSlot, false, p.update)
			if err != nil {
				return err
			}
			defer closeVol()
			rep, err := v.Verify(ctx)
			p.done()
			if err != nil {
				return err
			}
			if vf.jsonOut {
				if err := printJSON(stdout, rep); err != nil {
					return err
				}
			} else {
				for _, n := range rep.Notes {
					fmt.Fprintln(stdout, "note:", n)
				}
				for _, pr := range rep.Problems {
					if vf.lockDir == "" && len(pr.PendingSlots) > 0 {
						fmt.Fprintln(stdout, "pending:", pr)
					} else {
						fmt.Fprintln(stdout, "problem:", pr)
					}
				}
			}
			failing := rep.Problems
			if vf.lockDir == "" {
				failing = rep.Unmarked()
			}
			if !vf.jsonOut {
				fmt.Fprintf(stdout, "checked %d regions on %d legs: %d problems, %d pending recovery\n", rep.Regions, len(rep.Legs), len(failing), len(rep.Problems)-len(failing))
			}
			if len(failing) > 0 {
				return fmt.Errorf("%d inconsistencies found", len(failing))
			}
			return nil
		},
	}
	vf.register(c, true)
	root.AddCommand(c)
}
