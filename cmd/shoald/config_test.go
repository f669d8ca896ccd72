package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/nodetest"
)

// runShoald runs the shoald binary and returns its combined output.
func runShoald(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(nodetest.Binary(t, "shoald"), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// syncBuf is a bytes.Buffer safe for the node's log goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// runInProcess runs shoald's command tree in the test process, as main
// does, and returns what it printed and the exit code main would give.
func runInProcess(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out syncBuf
	root := newRoot(&out, &out)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(&out, "shoald:", err)
		return out.String(), exitCode(err)
	}
	return out.String(), 0
}

// treeDigest describes every file and directory under dir (path, mode,
// content hash), so a test can prove a failed start changed nothing.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, _ := d.Info()
		line := strings.TrimPrefix(p, dir) + " " + info.Mode().String()
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			h := sha256.Sum256(b)
			line += " " + hex.EncodeToString(h[:8])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestBadConfigurationIsRefusedAndChangesNothing(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	writeFile := func(name, body string) string {
		p := filepath.Join(base, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	foreign := filepath.Join(base, "foreign")
	if err := os.MkdirAll(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile("foreign/shoal-node.json", `{"cluster":"other","node":"n1","created":"2026-01-01T00:00:00Z"}`)

	// No start gets as far as serving: the kernel picks every port.
	ports := func() []string {
		return []string{"--client-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.2:0", "--admin-addr", "127.0.0.1:0"}
	}
	unknown := writeFile("unknown.hcl", "node_name = \"n1\"\ndata_dir = \""+filepath.Join(base, "d-unknown")+"\"\nleese { ttl = \"3s\" }\n")
	unknownField := writeFile("unknown-field.hcl", "node_name = \"n1\"\nlease {\n  ttl = \"4s\"\n  tll = \"3s\"\n}\n")
	unreachable := writeFile("unreachable.hcl", `
node_name = "n1"
profile = "fast"
etcd {
  start_timeout = "3s"
  initial_cluster = "n1=https://PEER,n2=https://127.0.0.1:1,n3=https://127.0.0.1:2"
  peer_addr = "PEER"
}
`)
	os.WriteFile(unreachable, []byte(strings.ReplaceAll(mustRead(t, unreachable), "PEER", "127.0.0.2:0")), 0o644)

	cases := []struct {
		name    string
		args    []string
		dataDir string
		code    int
		want    string
		slow    bool
	}{
		{name: "unknown block", args: []string{"--config", unknown}, dataDir: filepath.Join(base, "d-unknown"), code: 2, want: `unknown.hcl:3,1-6: unknown block "leese"`},
		{name: "unknown field", args: []string{"--config", unknownField, "--data-dir", filepath.Join(base, "d-field")}, dataDir: filepath.Join(base, "d-field"), code: 2, want: `unknown-field.hcl:4,3-13: unknown field "lease.tll"`},
		{name: "ttl not above 3x keepalive", args: []string{"--name", "n1", "--data-dir", filepath.Join(base, "d-ttl"), "--lease-ttl", "1s", "--keepalive-interval", "500ms"}, dataDir: filepath.Join(base, "d-ttl"), code: 2, want: "lease.ttl: 1s must exceed 3x lease.keepalive_interval (500ms)"},
		{name: "ttl cannot ride out leader loss", args: []string{"--name", "n1", "--data-dir", filepath.Join(base, "d-ride"), "--lease-ttl", "4s"}, dataDir: filepath.Join(base, "d-ride"), code: 2, want: "cannot ride out an etcd leader change"},
		{name: "bad duration", args: []string{"--name", "n1", "--data-dir", filepath.Join(base, "d-dur"), "--lease-ttl", "three"}, dataDir: filepath.Join(base, "d-dur"), code: 2, want: `lease.ttl: "three" is not a duration`},
		{name: "missing name", args: []string{"--data-dir", filepath.Join(base, "d-noname")}, dataDir: filepath.Join(base, "d-noname"), code: 2, want: "node_name: required"},
		{name: "data dir of another cluster", args: append([]string{"--name", "n1", "--data-dir", foreign, "--profile", "fast"}, ports()...), dataDir: foreign, code: 1, want: `belongs to cluster "other" (node "n1"), not to cluster "shoal"`},
		{name: "missing volume leg", args: append([]string{"--name", "n1", "--data-dir", filepath.Join(base, "d-leg"), "--profile", "fast", "--volume-legs", filepath.Join(base, "no-such-leg.img"), "--volume-slot", "0"}, ports()...), dataDir: filepath.Join(base, "d-leg"), code: 1, want: "volume.legs: cannot open"},
		{name: "unreachable peers", args: []string{"--config", unreachable, "--data-dir", filepath.Join(base, "d-unreach"), "--client-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, dataDir: filepath.Join(base, "d-unreach"), code: 1, want: "could not reach a quorum within 3s", slow: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.slow && testing.Short() {
				t.Skip("waits for the start timeout")
			}
			before := treeDigest(t, base)
			start := time.Now()
			out, code := runInProcess(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\n%s", code, tc.code, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not say %q:\n%s", tc.want, out)
			}
			if after := treeDigest(t, base); after != before {
				t.Errorf("the failed start changed the disk:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			t.Logf("refused in %s: %s", time.Since(start).Round(time.Millisecond), lastLine(out))
		})
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
