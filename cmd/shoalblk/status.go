package main

import (
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
)

func addStatus(root *cobra.Command) {
	vf := volumeFlags{readOnly: true}
	var on onlineFlags
	c := &cobra.Command{
		Use:   "status [LEG...]",
		Short: "Show legs, their states, dirty regions and resync progress (read-only)",
		Long: `Show the volume's leg table, each leg's state, dirty regions per node slot
and resync progress.

On a running cluster give --config (a node's configuration file) or --admin:
the node that has the volume open answers through its admin API (a
read-only certificate suffices). Otherwise give the LEGs: every leg is
opened read-only and nothing is written; a leg holding an older leg table
is reported as stale, a missing leg (with --allow-missing) as not attached.`,
		Args: on.legsOrOnline(),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			var st mirror.Status
			if on.given() {
				c, err := on.client()
				if err != nil {
					return err
				}
				if err := c.Get(ctx, "/api/volume", &st); err != nil {
					return apiError(err)
				}
			} else {
				v, closeVol, err := vf.openVolume(ctx, args, mirror.NoSlot, false, nil)
				if err != nil {
					return err
				}
				defer closeVol()
				if st, err = v.Status(ctx); err != nil {
					return err
				}
			}
			if vf.jsonOut {
				return printJSON(stdout, st)
			}
			printVolumeStatus(stdout, st)
			return nil
		},
	}
	vf.register(c, true)
	on.register(c)
	root.AddCommand(c)
}

// printVolumeStatus prints st for a person.
func printVolumeStatus(w io.Writer, st mirror.Status) {
	for _, n := range st.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	fmt.Fprintf(w, "volume %s  cluster %q  generation %d\n", st.Volume, st.ClusterID, st.Generation)
	fmt.Fprintf(w, "size %d bytes, %d-byte regions, %d node slots\n", st.Size, st.RegionSize, st.Slots)
	for _, l := range st.Legs {
		extra := ""
		if l.State == mirror.LegResyncing && st.RegionSize > 0 {
			total := st.Size / st.RegionSize
			extra = fmt.Sprintf("  resync %s from region %d of %d (%.1f%%)", map[bool]string{true: "full", false: "of missed writes"}[l.Full], l.Cursor, total, float64(l.Cursor)*100/float64(max(total, 1)))
		}
		online := ""
		if !l.Online {
			online = "  (not attached)"
		}
		fmt.Fprintf(w, "  leg %d  %-9s  %s  %s%s%s\n", l.Index, l.State, l.UUID, l.Addr, extra, online)
	}
	if len(st.Dirty) == 0 {
		fmt.Fprintln(w, "no dirty regions")
	}
	slots := []int{}
	for s := range st.Dirty {
		slots = append(slots, s)
	}
	sort.Ints(slots)
	for _, s := range slots {
		fmt.Fprintf(w, "  slot %d: %d dirty regions\n", s, st.Dirty[s])
	}
}
