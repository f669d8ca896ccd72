// Package clidoc gives Shoal's commands (shoald, shoalblk, lockctl) a
// hidden "man" subcommand that writes their man pages, generated from the
// same cobra command tree as --help, so the pages never drift from the
// flags. Shell completion comes from cobra's own "completion" subcommand.
package clidoc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// ManCommand returns the hidden "man DIR" subcommand: it writes one page
// per command of the tree (section 1) into DIR, creating it if needed.
func ManCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages of this command and its subcommands into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return WriteMan(cmd.Root(), args[0])
		},
	}
}

// WriteMan writes root's man pages (section 1) into dir.
func WriteMan(root *cobra.Command, dir string) error {
	if dir == "" {
		return errors.New("clidoc: no directory given")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("clidoc: %w", err)
	}
	root.DisableAutoGenTag = true // pages that do not change from build to build
	hdr := &doc.GenManHeader{Section: "1", Source: "Shoal", Manual: "Shoal manual"}
	if err := doc.GenManTree(root, hdr, filepath.Clean(dir)); err != nil {
		return fmt.Errorf("clidoc: writing man pages for %s: %w", root.Name(), err)
	}
	return nil
}
