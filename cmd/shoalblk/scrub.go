package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

func addScrub(root *cobra.Command) {
	var (
		vf     volumeFlags
		repair bool
		from   int64
	)
	c := &cobra.Command{
		Use:   "scrub [--repair] LEG...",
		Short: "Compare legs block by block, decide by checksum, optionally repair",
		Long: `Compare the in-sync legs region by region. Where copies differ, the copy
matching its stored checksum wins. Without --repair nothing is written.
Ctrl-C stops a scrub at a region boundary and prints the exact command that
resumes it (the same command with --from REGION).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			p := newProgress(cmd.ErrOrStderr(), vf.jsonOut)
			defer p.done()
			v, closeVol, err := vf.openVolume(ctx, args, mirror.NoSlot, false, p.update)
			if err != nil {
				return err
			}
			defer closeVol()
			rep, err := v.Scrub(ctx, mirror.ScrubOptions{Repair: repair, From: from})
			p.done()
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted after region %d; resume with: %s", from+rep.Regions-1, resumeCommand(cmd, args, "from", fmt.Sprint(from+rep.Regions)))
				}
				return err
			}
			if vf.jsonOut {
				return printJSON(stdout, rep)
			}
			for _, r := range rep.Repairs {
				verb := "found"
				if r.Repaired {
					verb = "repaired"
				}
				fmt.Fprintf(stdout, "%s: leg %d region %d offset %d: bad %s (right copy: leg %d, decided by %s)\n", verb, r.Leg, r.Region, r.Offset, r.Kind, r.FromLeg, r.Decided)
			}
			fmt.Fprintf(stdout, "scrubbed %d regions (%d blocks): %d bad copies\n", rep.Regions, rep.Blocks, len(rep.Repairs))
			if len(rep.Repairs) > 0 && !repair {
				return fmt.Errorf("%d bad copies found; run with --repair to fix them", len(rep.Repairs))
			}
			return nil
		},
	}
	vf.register(c, true)
	c.Flags().BoolVar(&repair, "repair", false, "rewrite wrong copies")
	c.Flags().Int64Var(&from, "from", 0, "first region to scrub (to resume)")
	c.Flags().StringVar(&vf.rate, "rate", "", "limit reading to this many bytes per second")
	root.AddCommand(c)
}
