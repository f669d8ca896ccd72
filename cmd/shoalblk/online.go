package main

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

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
