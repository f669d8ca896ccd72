package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
)

// withFlagHint names the flag that overrides a refusal; openFlag is the
// command's flag for a leg of an open volume ("" if it has none).
func withFlagHint(err error, openFlag string) error {
	switch {
	case errors.Is(err, mirror.ErrVolumeOpen) && openFlag == "":
		return fmt.Errorf("%w; stop its nodes (or recover the slots of crashed ones) first", err)
	case errors.Is(err, mirror.ErrVolumeOpen):
		return fmt.Errorf("%w; stop its nodes (or recover the slots of crashed ones), or give %s to overwrite it anyway", err, openFlag)
	case errors.Is(err, mirror.ErrLegNotBlank):
		return fmt.Errorf("%w; give --force to overwrite it", err)
	}
	return err
}

func addFormat(root *cobra.Command) {
	var (
		vf         volumeFlags
		size       string
		regionSize string
		slots      int
		clusterID  string
		force      bool
		forceOpen  bool
	)
	c := &cobra.Command{
		Use:   "format [flags] LEG...",
		Short: "Create a volume over the given legs",
		Long: `Create a mirrored volume over the given legs (files or block devices).
Missing files are created with --size bytes. A leg that holds a volume or any
data is refused unless --force is given; then its data area is zeroed. A leg
of a volume that a node has open (its open-volume marker, set while a node
runs with the volume and cleared when it stops or its slot is recovered) is
refused even with --force, unless --force-while-open is given too.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			rs, err := parseSize(regionSize)
			if err != nil {
				return fmt.Errorf("--region-size: %w", err)
			}
			var want int64
			if size != "" {
				if want, err = parseSize(size); err != nil {
					return fmt.Errorf("--size: %w", err)
				}
				if want <= 0 || want%blockdev.FileBlockSize != 0 {
					return fmt.Errorf("--size %s is not a positive multiple of %d bytes", size, blockdev.FileBlockSize)
				}
			}
			if len(args) > mirror.MaxLegs {
				return fmt.Errorf("%d legs given, a volume has at most %d", len(args), mirror.MaxLegs)
			}
			seen := map[string]bool{}
			created := 0
			var devs []blockdev.Device
			defer func() {
				for _, d := range devs {
					d.Close()
				}
			}()
			log := vf.logger()
			for _, a := range args {
				if seen[a] {
					return fmt.Errorf("leg %s given twice", a)
				}
				seen[a] = true
				isFile := !strings.Contains(a, "://")
				if isFile {
					fi, err := os.Stat(a)
					switch {
					case errors.Is(err, fs.ErrNotExist):
						if want == 0 {
							return fmt.Errorf("%s does not exist; give --size to create it", a)
						}
						created++
					case err != nil:
						return err
					case fi.Mode().IsRegular() && want != 0 && fi.Size() != want:
						return fmt.Errorf("%s exists with %d bytes but --size is %d; resize it or leave out --size", a, fi.Size(), want)
					}
				}
				d, err := blockdev.Open(ctx, a, blockdev.OpenOptions{Logger: log, Create: isFile && want > 0, CreateSize: want})
				if err != nil {
					return err
				}
				devs = append(devs, d)
			}
			p := newProgress(cmd.ErrOrStderr(), vf.jsonOut)
			defer p.done()
			sb, err := mirror.Format(ctx, devs, mirror.FormatOptions{
				RegionSize: rs, Slots: slots, ClusterID: clusterID, Addrs: args, Force: force,
				ForceWhileOpen: forceOpen, DataIsZero: created == len(args), Progress: p.update,
			})
			if err != nil {
				return withFlagHint(err, "--force-while-open")
			}
			p.done()
			if vf.jsonOut {
				return printJSON(stdout, map[string]any{"volume": sb.Volume, "cluster_id": sb.ClusterID, "size": sb.Geometry.VolumeSize(), "geometry": sb.Geometry, "legs": sb.Table.Legs})
			}
			fmt.Fprintf(stdout, "formatted volume %s: %d bytes, %d regions of %d bytes, %d node slots, %d legs\n",
				sb.Volume, sb.Geometry.VolumeSize(), sb.Geometry.Regions, sb.Geometry.RegionSize, sb.Geometry.Slots, len(args))
			return nil
		},
	}
	vf.register(c, true)
	c.Flags().StringVar(&size, "size", "", "size of each leg file to create (e.g. 1G)")
	c.Flags().StringVar(&regionSize, "region-size", "1M", "bytes per region (power of two, 4K to 64M)")
	c.Flags().IntVar(&slots, "slots", 8, "node slots (one write-intent bitmap each)")
	c.Flags().StringVar(&clusterID, "cluster-id", "shoal", "cluster identity recorded in the superblock")
	c.Flags().BoolVar(&force, "force", false, "overwrite legs that hold data or another volume")
	c.Flags().BoolVar(&forceOpen, "force-while-open", false, "overwrite legs even of a volume that a node has open (its nodes lose their volume)")
	root.AddCommand(c)
}
