package main

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

func addStatus(root *cobra.Command) {
	vf := volumeFlags{readOnly: true}
	c := &cobra.Command{
		Use:   "status LEG...",
		Short: "Show legs, their states, dirty regions and resync progress (read-only)",
		Long: `Show the volume's leg table, each leg's state, dirty regions per node slot
and resync progress. Every leg is opened read-only and nothing is written:
a leg holding an older leg table is reported as stale, a missing leg (with
--allow-missing) as not attached.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			v, closeVol, err := vf.openVolume(ctx, args, mirror.NoSlot, false, nil)
			if err != nil {
				return err
			}
			defer closeVol()
			st, err := v.Status(ctx)
			if err != nil {
				return err
			}
			if vf.jsonOut {
				return printJSON(stdout, st)
			}
			for _, n := range st.Notes {
				fmt.Fprintln(stdout, "note:", n)
			}
			fmt.Fprintf(stdout, "volume %s  cluster %q  generation %d\n", st.Volume, st.ClusterID, st.Generation)
			fmt.Fprintf(stdout, "size %d bytes, %d-byte regions, %d node slots\n", st.Size, st.RegionSize, st.Slots)
			g := v.Geometry()
			for _, l := range st.Legs {
				extra := ""
				if l.State == mirror.LegResyncing {
					total := g.Regions
					extra = fmt.Sprintf("  resync %s from region %d of %d (%.1f%%)", map[bool]string{true: "full", false: "of missed writes"}[l.Full], l.Cursor, total, float64(l.Cursor)*100/float64(total))
				}
				online := ""
				if !l.Online {
					online = "  (not attached)"
				}
				fmt.Fprintf(stdout, "  leg %d  %-9s  %s  %s%s%s\n", l.Index, l.State, l.UUID, l.Addr, extra, online)
			}
			if len(st.Dirty) == 0 {
				fmt.Fprintln(stdout, "no dirty regions")
			}
			slots := []int{}
			for s := range st.Dirty {
				slots = append(slots, s)
			}
			sort.Ints(slots)
			for _, s := range slots {
				fmt.Fprintf(stdout, "  slot %d: %d dirty regions\n", s, st.Dirty[s])
			}
			return nil
		},
	}
	vf.register(c, true)
	root.AddCommand(c)
}
