package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/node"
)

func addResync(root *cobra.Command) {
	var (
		vf      volumeFlags
		on      onlineFlags
		legs    []string
		recover []int
		allDead bool
	)
	c := &cobra.Command{
		Use:   "resync [flags] (--config FILE [--leg LEG]... | LEG...)",
		Short: "Bring returning and new legs in sync; recover crashed slots",
		Long: `Every failed leg given on the command line is brought back: it gets all
writes from now on and the regions it missed (marked in the write-intent
bitmaps) are copied to it. Legs added with add-leg are fully copied. With
--recover-slot N (repeatable) or --all-slots, the dirty regions of those node
slots are resynced first; only do that for slots whose node is down.
Interrupt at any time (Ctrl-C): run the command again to resume.

On a running cluster give --config (a node's configuration file) or --admin
instead of the LEGs, and --leg (index, address or UUID; repeatable) for
each failed leg to bring back: the node does it through its admin API
(admin role) while the cluster keeps serving, and the command follows the
copy (Ctrl-C stops following, not the copy). Crashed slots are the nodes'
own recoveries' to resync there.`,
		Args: on.legsOrOnline(),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			if on.given() {
				if len(recover) > 0 || allDead || vf.rate != "" {
					return fmt.Errorf("--recover-slot, --all-slots and --rate apply to the volume opened by the tool; on a running cluster the nodes' recoveries resync crashed slots")
				}
				c, err := on.client()
				if err != nil {
					return err
				}
				var res node.ResyncStarted
				for _, l := range legs {
					if err := c.Post(ctx, "/api/volume/legs/return", node.LegRequest{Leg: l}, &res); err != nil {
						return apiError(err)
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "leg %d back in the volume; %s copies what it missed\n", res.Leg, c.Base())
				}
				if len(legs) == 0 {
					if err := c.Post(ctx, "/api/volume/resync", nil, &res); err != nil {
						return apiError(err)
					}
				}
				st, err := followResync(ctx, c, cmd.ErrOrStderr(), vf.jsonOut)
				if err != nil {
					return err
				}
				if vf.jsonOut {
					return printJSON(stdout, st)
				}
				fmt.Fprintln(stdout, "every leg in sync")
				return nil
			}
			if len(legs) > 0 {
				return fmt.Errorf("--leg goes with --config/--admin; with LEGs, every failed leg given is brought back")
			}
			p := newProgress(cmd.ErrOrStderr(), vf.jsonOut)
			defer p.done()
			v, closeVol, err := vf.openVolume(ctx, args, mirror.NoSlot, false, p.update)
			if err != nil {
				return err
			}
			defer closeVol()
			out := map[string]any{}
			slots := recover
			if allDead {
				slots = nil
				for s := 0; s < v.Geometry().Slots; s++ {
					slots = append(slots, s)
				}
			}
			var recs []mirror.RecoverReport
			for _, s := range slots {
				rep, err := v.Recover(ctx, s)
				recs = append(recs, rep)
				if err != nil {
					return fmt.Errorf("recover slot %d: %w", s, err)
				}
				if !vf.jsonOut && rep.Regions > 0 {
					p.done()
					fmt.Fprintf(stdout, "slot %d: resynced %d regions (bitmap cleared: %v)\n", s, rep.Regions, rep.Cleared)
				}
			}
			out["recovered"] = recs
			if err := returnGivenLegs(ctx, v, args, vf); err != nil {
				return err
			}
			rep, err := v.Resync(ctx)
			p.done()
			out["resync"] = rep
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted; run resync again to resume: %w", err)
				}
				return err
			}
			// Slots recovered while a leg was out kept their marks (the
			// record of what that leg missed); with every leg in sync
			// now, a second pass can clear them.
			for k, rr := range recs {
				if rr.Cleared || v.Table().InSync() != len(v.Table().Legs) {
					continue
				}
				again, err := v.Recover(ctx, rr.Slot)
				if err != nil {
					return fmt.Errorf("recover slot %d: %w", rr.Slot, err)
				}
				recs[k] = again
			}
			out["recovered"] = recs
			if vf.jsonOut {
				return printJSON(stdout, out)
			}
			for _, l := range rep.Legs {
				kind := "missed writes"
				if l.Full {
					kind = "full copy"
				}
				fmt.Fprintf(stdout, "leg %d in sync: %s, %d regions copied (resumed at region %d)\n", l.Leg, kind, l.Regions, l.From)
			}
			if len(rep.Legs) == 0 {
				fmt.Fprintln(stdout, "no leg needed a resync")
			}
			return nil
		},
	}
	vf.register(c, true)
	c.Flags().StringVar(&vf.rate, "rate", "", "limit copying to this many bytes per second (e.g. 100M)")
	c.Flags().IntSliceVar(&recover, "recover-slot", nil, "resync the dirty regions of this node slot first (node must be down)")
	c.Flags().BoolVar(&allDead, "all-slots", false, "recover every node slot first (the whole cluster must be down)")
	c.Flags().StringSliceVar(&legs, "leg", nil, "with --config/--admin: a failed leg to bring back (index, address or UUID; repeatable)")
	on.register(c)
	root.AddCommand(c)
}

// returnGivenLegs marks every failed leg whose device was given as
// returning (resyncing).
func returnGivenLegs(ctx context.Context, v *mirror.Volume, addrs []string, vf volumeFlags) error {
	t := v.Table()
	for _, a := range addrs {
		d, err := blockdev.Open(ctx, a, blockdev.OpenOptions{Logger: vf.logger()})
		if err != nil {
			return err
		}
		sb, err := mirror.ReadSuperblock(ctx, d)
		if err != nil {
			d.Close()
			return fmt.Errorf("%s: %w", a, err)
		}
		i := t.Find(sb.Self)
		if i < 0 || t.Legs[i].State != mirror.LegFailed {
			d.Close()
			continue
		}
		if err := v.ReturnLeg(ctx, i, d); err != nil {
			d.Close()
			return fmt.Errorf("return leg %d (%s): %w", i, a, err)
		}
	}
	return nil
}
