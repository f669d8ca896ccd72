package clidoc

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func sampleRoot() *cobra.Command {
	root := &cobra.Command{Use: "tool", Short: "A tool"}
	sub := &cobra.Command{Use: "ls", Short: "List things", RunE: func(*cobra.Command, []string) error { return nil }}
	sub.Flags().Bool("json", false, "print JSON")
	root.AddCommand(sub, ManCommand())
	return root
}

func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	root := sampleRoot()
	root.SetArgs([]string{"man", dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "tool-ls.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".TH \"TOOL-LS\" \"1\"", "List things", "--json", "print JSON"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("tool-ls.1 lacks %q:\n%s", want, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "tool.1")); err != nil {
		t.Fatal(err)
	}
	// The man command itself is hidden, so it has no page.
	if _, err := os.Stat(filepath.Join(dir, "tool-man.1")); err == nil {
		t.Error("the hidden man command got a page")
	}
}

func TestCompletionStaysAvailable(t *testing.T) {
	root := sampleRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"completion", "bash"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "__start_tool") {
		t.Fatalf("no bash completion: %.200s", out.String())
	}
}

func TestManNeedsADirectory(t *testing.T) {
	if err := WriteMan(sampleRoot(), ""); err == nil {
		t.Fatal("no error for an empty directory")
	}
}
