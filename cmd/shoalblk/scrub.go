package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/internal/adminclient"
	"github.com/shoal-ha/shoal/node"
)

func addScrub(root *cobra.Command) {
	var (
		vf     volumeFlags
		on     onlineFlags
		repair bool
		from   int64
	)
	c := &cobra.Command{
		Use:   "scrub [--repair] (--config FILE | --admin ADDR | LEG...)",
		Short: "Compare legs block by block, decide by checksum, optionally repair",
		Long: `Compare the in-sync legs region by region. Where copies differ, the copy
matching its stored checksum wins. Without --repair nothing is written.
Ctrl-C stops a scrub at a region boundary and prints the exact command that
resumes it (the same command with --from REGION).

On a running cluster give --config (a node's configuration file) or --admin
instead of the LEGs: the node scrubs under the cluster's region locks while
the cluster keeps serving (admin role), and the command waits for its
report (Ctrl-C stops waiting, not the scrub; GET /api/volume/scrub has the
outcome).`,
		Args: on.legsOrOnline(),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			if on.given() {
				if vf.rate != "" {
					return fmt.Errorf("--rate applies to the volume opened by the tool")
				}
				rep, err := scrubOnline(cmd, &on, repair, from)
				if err != nil {
					return err
				}
				return printScrub(cmd, stdout, vf.jsonOut, repair, rep)
			}
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
			return printScrub(cmd, stdout, vf.jsonOut, repair, rep)
		},
	}
	vf.register(c, true)
	c.Flags().BoolVar(&repair, "repair", false, "rewrite wrong copies")
	c.Flags().Int64Var(&from, "from", 0, "first region to scrub (to resume)")
	c.Flags().StringVar(&vf.rate, "rate", "", "limit reading to this many bytes per second")
	on.register(c)
	root.AddCommand(c)
}

// printScrub prints a scrub's report; bad copies left unrepaired are an
// error.
func printScrub(cmd *cobra.Command, stdout io.Writer, asJSON, repair bool, rep mirror.ScrubReport) error {
	if asJSON {
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
}

// scrubOnline has a running node scrub and waits for its report.
func scrubOnline(cmd *cobra.Command, on *onlineFlags, repair bool, from int64) (mirror.ScrubReport, error) {
	ctx := cmd.Context()
	c, err := on.client()
	if err != nil {
		return mirror.ScrubReport{}, err
	}
	var st node.ScrubState
	if err := c.Post(ctx, "/api/volume/scrub", node.ScrubRequest{Repair: repair, From: from}, &st); err != nil {
		var se *adminclient.StatusError
		if errors.As(err, &se) && se.Code == http.StatusConflict {
			return mirror.ScrubReport{}, fmt.Errorf("a scrub already runs on %s; GET /api/volume/scrub follows it", c.Base())
		}
		return mirror.ScrubReport{}, apiError(err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s scrubs the volume from region %d (Ctrl-C stops waiting, not the scrub)\n", c.Base(), from)
	for st.Running {
		select {
		case <-ctx.Done():
			return mirror.ScrubReport{}, fmt.Errorf("stopped waiting; the node keeps scrubbing (GET /api/volume/scrub on %s has the outcome)", c.Base())
		case <-time.After(250 * time.Millisecond):
		}
		id := st.ID
		if err := c.Get(ctx, "/api/volume/scrub", &st); err != nil {
			return mirror.ScrubReport{}, apiError(err)
		}
		if st.ID != id {
			return mirror.ScrubReport{}, fmt.Errorf("the node's scrub %d was replaced by scrub %d (another operator, or the node restarted)", id, st.ID)
		}
	}
	if st.Error != "" {
		return st.Report, fmt.Errorf("the scrub stopped after region %d: %s; resume with --from %d", from+st.Report.Regions-1, st.Error, from+st.Report.Regions)
	}
	return st.Report, nil
}
