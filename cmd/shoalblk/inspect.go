package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// legReport is what inspect says about one leg, read directly from it.
type legReport struct {
	Addr       string           `json:"addr"`
	Error      string           `json:"error,omitempty"`
	Volume     string           `json:"volume,omitempty"`
	Self       string           `json:"self,omitempty"`
	ClusterID  string           `json:"cluster_id,omitempty"`
	Generation uint64           `json:"generation,omitempty"`
	Geometry   *mirror.Geometry `json:"geometry,omitempty"`
	Legs       []mirror.LegInfo `json:"legs,omitempty"`
	Bitmaps    []slotReport     `json:"bitmaps,omitempty"`
	// Stale says that another given leg of the same volume holds a newer
	// leg table: this leg's table is old and not the volume's.
	Stale string `json:"stale,omitempty"`
}

type slotReport struct {
	Slot    int      `json:"slot"`
	Dirty   []int64  `json:"dirty_regions"`
	Damaged []string `json:"damaged,omitempty"`
}

func addInspect(root *cobra.Command) {
	var vf volumeFlags
	c := &cobra.Command{
		Use:   "inspect LEG...",
		Short: "Show each leg's superblock and write-intent bitmaps",
		Long:  "Read each leg on its own (the others need not be present) and show its superblock and every slot's write-intent bitmap.",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			var reps []legReport
			bad := 0
			for _, a := range args {
				rep := legReport{Addr: a}
				d, err := blockdev.Open(ctx, a, blockdev.OpenOptions{ReadOnly: true, Logger: vf.logger()})
				if err == nil {
					err = inspectLeg(ctx, d, &rep)
					d.Close()
				}
				if err != nil {
					rep.Error = err.Error()
					bad++
				}
				reps = append(reps, rep)
			}
			markStale(reps)
			if vf.jsonOut {
				if err := printJSON(stdout, reps); err != nil {
					return err
				}
			} else {
				for _, r := range reps {
					printLegReport(stdout, r)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d legs could not be read", bad, len(args))
			}
			return nil
		},
	}
	vf.cmd = c
	c.Flags().BoolVar(&vf.jsonOut, "json", false, "print JSON")
	c.Flags().BoolVarP(&vf.verbose, "verbose", "v", false, "log to stderr")
	root.AddCommand(c)
}

func inspectLeg(ctx context.Context, d blockdev.Device, rep *legReport) error {

	sb, err := mirror.ReadSuperblock(ctx, d)
	if err != nil {
		return err
	}
	g := sb.Geometry
	rep.Volume, rep.Self, rep.ClusterID, rep.Generation = sb.Volume.String(), sb.Self.String(), sb.ClusterID, sb.Table.Generation
	rep.Geometry, rep.Legs = &g, sb.Table.Legs
	buf := make([]byte, mirror.BitmapBlockSize)
	for s := 0; s < g.Slots; s++ {
		sr := slotReport{Slot: s, Dirty: []int64{}}
		bm := mirror.NewBitmap(g.Regions)
		for i := int64(0); i < g.BitmapBlocksPerSlot; i++ {
			if err := d.ReadAt(ctx, buf, g.BitmapBlockOffset(s, i)); err != nil {
				sr.Damaged = append(sr.Damaged, fmt.Sprintf("block %d: %v", i, err))
				continue
			}
			bb, err := mirror.DecodeBitmapBlock(buf, sb.Volume, s, i)
			if err != nil {
				sr.Damaged = append(sr.Damaged, fmt.Sprintf("block %d: %v", i, err))
				continue
			}
			bb.MergeInto(bm)
		}
		sr.Dirty = append(sr.Dirty, bm.Regions()...)
		rep.Bitmaps = append(rep.Bitmaps, sr)
	}
	return nil
}

// markStale notes, on every leg whose table is older than the newest table
// of the same volume among the given legs, where the newer one is.
func markStale(reps []legReport) {
	newest := map[string]int{} // volume -> index of the leg with its newest table
	for i, r := range reps {
		if r.Error != "" {
			continue
		}
		if j, ok := newest[r.Volume]; !ok || r.Generation > reps[j].Generation {
			newest[r.Volume] = i
		}
	}
	for i, r := range reps {
		if r.Error != "" {
			continue
		}
		if j := newest[r.Volume]; reps[j].Generation > r.Generation {
			reps[i].Stale = fmt.Sprintf("stale: leg table generation %d, %s holds generation %d", r.Generation, reps[j].Addr, reps[j].Generation)
		}
	}
}

func printLegReport(stdout io.Writer, r legReport) {
	fmt.Fprintf(stdout, "leg %s\n", r.Addr)
	if r.Error != "" {
		fmt.Fprintf(stdout, "  error: %s\n", r.Error)
		return
	}
	g := r.Geometry
	fmt.Fprintf(stdout, "  volume %s  cluster %q  generation %d\n  this leg %s\n", r.Volume, r.ClusterID, r.Generation, r.Self)
	if r.Stale != "" {
		fmt.Fprintf(stdout, "  %s\n", r.Stale)
	}
	fmt.Fprintf(stdout, "  size %d bytes  regions %d x %d bytes  block %d  slots %d  data at %d\n", g.VolumeSize(), g.Regions, g.RegionSize, g.BlockSize, g.Slots, g.DataOffset)
	fmt.Fprintf(stdout, "  legs:\n")
	for i, l := range r.Legs {
		me := ""
		if l.UUID.String() == r.Self {
			me = "  (this leg)"
		}
		extra := ""
		if l.State == mirror.LegResyncing {
			extra = fmt.Sprintf("  full=%v cursor=%d", l.Full, l.Cursor)
		}
		fmt.Fprintf(stdout, "    %d  %-9s  %s  %s%s%s\n", i, l.State, l.UUID, l.Addr, extra, me)
	}
	fmt.Fprintf(stdout, "  bitmaps:\n")
	for _, s := range r.Bitmaps {
		line := fmt.Sprintf("    slot %d: %d dirty", s.Slot, len(s.Dirty))
		if n := len(s.Dirty); n > 0 {
			show := s.Dirty
			if n > 16 {
				show = show[:16]
			}
			line += fmt.Sprintf(" %v", show)
			if n > 16 {
				line += " ..."
			}
		}
		for _, d := range s.Damaged {
			line += "\n      damaged " + d
		}
		fmt.Fprintln(stdout, line)
	}
}
