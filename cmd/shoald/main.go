// Command shoald is the Shoal node daemon: an embedded etcd member (or a
// client of an external etcd cluster), the node's lease and membership, the
// lock manager, the shared volume, the recovery coordinator campaign and the
// admin HTTP listener, assembled by package node. This command only reads
// flags and the configuration file and handles signals.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoald:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is the process exit code for an error of the root command: 2
// for a configuration error, 1 for the rest.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, cluster.ErrInvalidConfig):
		return 2
	}
	return 1
}

// newRoot builds the command tree writing to out and errOut (the node's
// log goes to errOut); running it with a context runs the node until the
// context ends. Tests run it in the test process.
func newRoot(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "shoald",
		Short:         "Shoal node daemon",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	run := newRunCmd()
	root.AddCommand(run, newStatusCmd(), newLeaveCmd(), newCertCmd(), newWatchCmd(), clidoc.ManCommand())
	// `shoald` with no subcommand runs the node.
	root.RunE = run.RunE
	root.Flags().AddFlagSet(run.Flags())
	return root
}
