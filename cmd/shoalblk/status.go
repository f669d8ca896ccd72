package main

import (
	"fmt"
	"os"
	"sort"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

func init() {
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
			ctx, cancel := signalContext()
			defer cancel()
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
				return printJSON(os.Stdout, st)
			}
			for _, n := range st.Notes {
				fmt.Println("note:", n)
			}
			fmt.Printf("volume %s  cluster %q  generation %d\n", st.Volume, st.ClusterID, st.Generation)
			fmt.Printf("size %d bytes, %d-byte regions, %d node slots\n", st.Size, st.RegionSize, st.Slots)
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
				fmt.Printf("  leg %d  %-9s  %s  %s%s%s\n", l.Index, l.State, l.UUID, l.Addr, extra, online)
			}
			if len(st.Dirty) == 0 {
				fmt.Println("no dirty regions")
			}
			slots := []int{}
			for s := range st.Dirty {
				slots = append(slots, s)
			}
			sort.Ints(slots)
			for _, s := range slots {
				fmt.Printf("  slot %d: %d dirty regions\n", s, st.Dirty[s])
			}
			return nil
		},
	}
	vf.register(c, true)
	rootCmd.AddCommand(c)
}
