// Command shoalblk is the block-device helper: it formats, inspects, checks,
// repairs, resyncs and scrubs Shoal volumes, manages mirror legs and looks at
// iSCSI targets and their persistent reservations.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/internal/clidoc"
)

// main runs the command until it ends or SIGINT/SIGTERM cancels its
// context: long operations stop at a safe point and can be run again to
// resume.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, newRoot(os.Stdout, os.Stderr), os.Args[1:])
	stop()
	os.Exit(code)
}

// execute runs root with args and returns the process exit code: 0, or
// after writing "shoalblk: ERROR" to root's error writer 1 (or the
// error's own ExitCode(), as store check --repair's).
func execute(ctx context.Context, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(root.ErrOrStderr(), "shoalblk:", err)
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

// newRoot builds the command tree writing results to out and progress,
// logs and notes to errOut. Every call builds a tree of its own (flags
// included), so tests run it in the test process.
func newRoot(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "shoalblk",
		Short:         "Shoal block-device helper",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	addFormat(root)
	addInspect(root)
	addCheck(root)
	addStatus(root)
	addResync(root)
	addScrub(root)
	addLegs(root)
	addIscsi(root)
	addStress(root)
	addStore(root)
	root.AddCommand(clidoc.ManCommand())
	return root
}
