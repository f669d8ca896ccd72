package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/internal/adminclient"
)

// onlineFlags point a command at a running cluster: a node's admin API
// (HTTPS) with the credentials of the node's configuration file or of the
// certificate/token flags. A command given them asks the node, which
// already has the volume open under the cluster's locks, instead of
// opening the legs itself.
type onlineFlags struct {
	t adminclient.Target
}

func (o *onlineFlags) register(c *cobra.Command) {
	o.t.Flags(c.Flags(), true)
}

// given says whether the command is aimed at a running cluster.
func (o *onlineFlags) given() bool { return o.t.Config != "" || len(o.t.Admin) > 0 }

func (o *onlineFlags) client() (*adminclient.Client, error) { return o.t.Client() }

// legsOrOnline accepts LEG arguments (the volume opened by the tool) or
// the online flags (a running node asked), not both and not neither.
func (o *onlineFlags) legsOrOnline() cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case o.given() && len(args) > 0:
			return fmt.Errorf("give the LEGs (the tool opens the volume; no node may be changing it) or --config/--admin (a running node does it), not both")
		case !o.given() && len(args) == 0:
			return fmt.Errorf("give the volume's LEGs, or --config/--admin to ask a running node")
		}
		return nil
	}
}

// apiError says what to do about a refusal of the admin API, and gives
// another answer of the node by its message.
func apiError(err error) error {
	var se *adminclient.StatusError
	if errors.As(err, &se) && se.Code != http.StatusUnauthorized && se.Code != http.StatusForbidden {
		return fmt.Errorf("%s: %s", se.URL, se.Message)
	}
	return adminclient.Explain(err)
}

// followResync follows a resync that a node runs, through GET
// /api/volume, until every leg is in sync: progress lines on errOut (at
// most one a second), an error when a leg fails meanwhile. Ctrl-C stops
// following, not the copy.
func followResync(ctx context.Context, c *adminclient.Client, errOut io.Writer, quiet bool) (mirror.Status, error) {
	var last time.Time
	// A copy that stops advancing (the node's resync ended with an
	// error, or it lost its lease) is not followed for ever.
	const stall = time.Minute
	cursor, moved := int64(-1), time.Now()
	for {
		var st mirror.Status
		if err := c.Get(ctx, "/api/volume", &st); err != nil {
			if ctx.Err() != nil {
				return st, fmt.Errorf("stopped following; the node keeps copying (shoalblk status --config shows how far)")
			}
			return st, apiError(err)
		}
		busy := false
		sum := int64(0)
		for _, l := range st.Legs {
			if l.State != mirror.LegResyncing {
				continue
			}
			busy = true
			sum += l.Cursor + 1
			if !quiet && time.Since(last) >= time.Second && st.RegionSize > 0 {
				total := st.Size / st.RegionSize
				fmt.Fprintf(errOut, "leg %d: copying, region %d of %d (%.1f%%)\n", l.Index, l.Cursor, total, float64(l.Cursor)*100/float64(max(total, 1)))
				last = time.Now()
			}
		}
		if !busy {
			return st, nil
		}
		if sum != cursor {
			cursor, moved = sum, time.Now()
		} else if time.Since(moved) > stall {
			return st, fmt.Errorf("the copy has not advanced for %v; see the node's log (shoalblk resync --config resumes it)", stall)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("stopped following; the node keeps copying (shoalblk status --config shows how far)")
		case <-time.After(250 * time.Millisecond):
		}
	}
}
