// Command shoalblk is the block-device helper: it formats, inspects, checks,
// repairs, resyncs and scrubs Shoal volumes, manages mirror legs and looks at
// iSCSI targets and their persistent reservations.
package main

import (
	"fmt"
	"os"

	"github.com/shoal-ha/shoal/internal/clidoc"
	"github.com/spf13/cobra"
)

// rootCmd is the shoalblk command; each subcommand adds itself in init().
var rootCmd = &cobra.Command{
	Use:           "shoalblk",
	Short:         "Shoal block-device helper",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func init() { rootCmd.AddCommand(clidoc.ManCommand()) }

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shoalblk:", err)
		os.Exit(1)
	}
}
