// Command shoald is the Shoal node daemon: an embedded etcd member (or a
// client of an external etcd cluster), the node's lease and membership, the
// recovery coordinator campaign and the admin HTTP listener.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/clidoc"
	"github.com/spf13/cobra"
)

// exitError carries the process exit code with an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	root := &cobra.Command{
		Use:           "shoald",
		Short:         "Shoal node daemon",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	run := newRunCmd()
	root.AddCommand(run, newStatusCmd(), newLeaveCmd(), newWatchCmd(), clidoc.ManCommand())
	// `shoald` with no subcommand runs the node.
	root.RunE = run.RunE
	root.Flags().AddFlagSet(run.Flags())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shoald:", err)
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if errors.Is(err, cluster.ErrInvalidConfig) {
			code = 2
		}
		os.Exit(code)
	}
}
