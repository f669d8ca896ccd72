package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/node"
)

// alreadyAdded reports whether d is already a leg of v's table (an
// interrupted add-leg) and its index.
func alreadyAdded(ctx context.Context, v *mirror.Volume, d blockdev.Device) (int, bool, error) {
	sb, err := mirror.ReadSuperblock(ctx, d)
	if err != nil || sb.Volume != v.UUID() {
		return -1, false, nil
	}
	i := v.Table().Find(sb.Self)
	return i, i >= 0, nil
}

func addLegs(root *cobra.Command) {
	var (
		vf       volumeFlags
		on       onlineFlags
		newLeg   string
		size     string
		force    bool
		noResync bool
	)
	add := &cobra.Command{
		Use:   "add-leg --leg NEW (--config FILE | --admin ADDR | LEG...)",
		Short: "Add a leg to the volume and copy everything to it",
		Long: `Add a leg to the volume and copy everything to it.

On a running cluster give --config (a node's configuration file) or --admin:
the node adds the leg through its admin API (admin role) and copies to it
while the cluster keeps serving; the command follows the copy (Ctrl-C stops
following, not the copy; the same command resumes an add cut short). With
the cluster stopped, give the existing LEGs instead.`,
		Args: on.legsOrOnline(),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			if newLeg == "" {
				return fmt.Errorf("--leg NEW is required")
			}
			if on.given() {
				if size != "" || noResync || vf.rate != "" {
					return fmt.Errorf("--size, --no-resync and --rate apply to the volume opened by the tool; a node creates a missing file at the leg size and copies at once")
				}
				c, err := on.client()
				if err != nil {
					return err
				}
				var res node.ResyncStarted
				if err := c.Post(ctx, "/api/volume/legs/add", node.AddLegRequest{Addr: newLeg, Force: force}, &res); err != nil {
					return apiError(err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "leg %d (%s) is in the volume; %s copies to it\n", res.Leg, newLeg, c.Base())
				st, err := followResync(ctx, c, cmd.ErrOrStderr(), vf.jsonOut)
				if err != nil {
					return err
				}
				if vf.jsonOut {
					return printJSON(stdout, st)
				}
				fmt.Fprintf(stdout, "leg %d in sync\n", res.Leg)
				return nil
			}
			for _, a := range args {
				if a == newLeg {
					return fmt.Errorf("%s is already given as an existing leg", a)
				}
			}
			p := newProgress(cmd.ErrOrStderr(), vf.jsonOut)
			defer p.done()
			v, closeVol, err := vf.openVolume(ctx, args, mirror.NoSlot, false, p.update)
			if err != nil {
				return err
			}
			defer closeVol()
			opts := blockdev.OpenOptions{Logger: vf.logger()}
			if !strings.Contains(newLeg, "://") {
				if _, err := os.Stat(newLeg); errors.Is(err, fs.ErrNotExist) {
					if size == "" {
						opts.CreateSize = v.Geometry().LegSize()
					} else if opts.CreateSize, err = parseSize(size); err != nil {
						return fmt.Errorf("--size: %w", err)
					}
					opts.CreateSize = (opts.CreateSize + blockdev.FileBlockSize - 1) / blockdev.FileBlockSize * blockdev.FileBlockSize
					opts.Create = true
				}
			}
			d, err := blockdev.Open(ctx, newLeg, opts)
			if err != nil {
				return err
			}
			// An add-leg that was interrupted after the leg joined the
			// table resumes: the leg is already there, resyncing.
			i, resumed, err := alreadyAdded(ctx, v, d)
			if err != nil {
				d.Close()
				return err
			}
			if resumed {
				d.Close()
				switch st := v.Table().Legs[i].State; st {
				case mirror.LegInSync:
					fmt.Fprintf(stdout, "leg %d (%s) is already in the volume and in sync\n", i, newLeg)
					return nil
				case mirror.LegFailed:
					return fmt.Errorf("leg %d (%s) is already in the volume but failed; bring it back with: shoalblk resync %s %s", i, newLeg, strings.Join(args, " "), newLeg)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "leg %d (%s) was already added; resuming the copy at region %d\n", i, newLeg, v.Table().Legs[i].Cursor)
			} else {
				if i, err = v.AddLeg(ctx, d, newLeg, force); err != nil {
					d.Close()
					return withFlagHint(err, "")
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "added leg %d (%s); copying (Ctrl-C stops; the same command resumes)\n", i, newLeg)
			}
			if noResync {
				return nil
			}
			rep, err := v.Resync(ctx)
			p.done()
			if err != nil {
				return fmt.Errorf("leg %d added but not yet in sync; run the same command again (or shoalblk resync) to finish: %w", i, err)
			}
			if vf.jsonOut {
				return printJSON(stdout, rep)
			}
			fmt.Fprintf(stdout, "leg %d in sync\n", i)
			return nil
		},
	}
	vf.register(add, true)
	add.Flags().StringVar(&newLeg, "leg", "", "the new leg (created at the volume's leg size if it is a missing file)")
	add.Flags().StringVar(&size, "size", "", "size of the new leg file if it must be created")
	add.Flags().BoolVar(&force, "force", false, "overwrite a leg that holds data or another volume")
	add.Flags().BoolVar(&noResync, "no-resync", false, "only add the leg; copy later with resync")
	add.Flags().StringVar(&vf.rate, "rate", "", "limit copying to this many bytes per second")
	on.register(add)
	root.AddCommand(add)

	for _, op := range []struct{ name, short string }{
		{"fail-leg", "Mark a leg failed for the whole cluster"},
		{"remove-leg", "Remove a leg from the volume"},
	} {
		var (
			vf  volumeFlags
			on  onlineFlags
			leg string
		)
		c := &cobra.Command{
			Use:   op.name + " --leg INDEX|ADDR|UUID (--config FILE | --admin ADDR | LEG...)",
			Short: op.short,
			Long: op.short + `. The last in-sync leg is refused.

On a running cluster give --config (a node's configuration file) or --admin:
the node makes the change through its admin API (an admin certificate or
the admin token; a read-only one is refused) and every node follows the
leg table. With the cluster stopped, give the LEGs instead; a leg that is
gone can be left out with --allow-missing.`,
			Args: on.legsOrOnline(),
			RunE: func(cmd *cobra.Command, args []string) error {
				stdout := cmd.OutOrStdout()
				ctx := cmd.Context()
				if leg == "" {
					return fmt.Errorf("--leg is required")
				}
				var t mirror.LegTable
				if on.given() {
					c, err := on.client()
					if err != nil {
						return err
					}
					if err := c.Post(ctx, "/api/volume/legs/"+strings.TrimSuffix(op.name, "-leg"), map[string]string{"leg": leg}, &t); err != nil {
						return apiError(err)
					}
				} else {
					v, closeVol, err := vf.openVolume(ctx, args, mirror.NoSlot, false, nil)
					if err != nil {
						return err
					}
					defer closeVol()
					i, err := v.Table().Lookup(leg)
					if err != nil {
						return err
					}
					if op.name == "fail-leg" {
						err = v.FailLeg(ctx, i)
					} else {
						err = v.RemoveLeg(ctx, i)
					}
					if err != nil {
						return err
					}
					t = v.Table()
				}
				if vf.jsonOut {
					return printJSON(stdout, t)
				}
				fmt.Fprintf(stdout, "%s: done; leg table generation %d\n", op.name, t.Generation)
				return nil
			},
		}
		vf.register(c, true)
		on.register(c)
		c.Flags().StringVar(&leg, "leg", "", "leg to act on: table index, address or UUID")
		root.AddCommand(c)
	}
}
