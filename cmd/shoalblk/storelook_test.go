package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/internal/etcdtest"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storenode"
)

// openTestVolume opens the volume over the leg files with cfg (read-only
// legs when cfg.ReadOnly).
func openTestVolume(t *testing.T, legs []string, cfg mirror.Config) *mirror.Volume {
	t.Helper()
	for _, p := range legs {
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{ReadOnly: cfg.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Legs = append(cfg.Legs, d)
	}
	v, err := mirror.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fillStore writes files into the store on legs as volume slot 0 and
// leaves one committed transaction with a pending record in the journal.
func fillStore(t *testing.T, legs []string, files map[string]string) {
	t.Helper()
	ctx := context.Background()
	v := openTestVolume(t, legs, mirror.FastConfig(0))
	defer v.Close()
	st, err := store.Open(ctx, store.DefaultConfig(v, 0, store.NewMemLocks().Node("filler")))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := st.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := st.WriteFile(name, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	err = st.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.Log("intent", []byte("pending one"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStoreLookCommands: ls, stat and cat show what was written, the
// journal dump shows the slot's pending record, and check --online reads
// the store under the locks of a cluster's lock manager.
func TestStoreLookCommands(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs shoalblk")
	}
	dir := t.TempDir()
	bin := buildShoalblk(t)
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	if _, err := run(t, bin, "format", "--size", "64M", "--region-size", "1M", "--slots", "4", a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, bin, "mkstore", a, b); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789", 1000)
	fillStore(t, []string{a, b}, map[string]string{"site/index.html": "<h1>hello</h1>\n", "site/big.bin": big})
	out, err := runStdout(t, bin, "store", "ls", "site", a, b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "index.html") || !strings.Contains(out, "big.bin") || !strings.Contains(out, strconv.Itoa(len(big))) {
		t.Fatalf("ls site:\n%s", out)
	}
	out, err = runStdout(t, bin, "store", "stat", "--json", "site/big.bin", a, b)
	if err != nil {
		t.Fatal(err)
	}
	var fi storenode.Entry
	if err := json.Unmarshal([]byte(out), &fi); err != nil || fi.Size != int64(len(big)) || fi.Ino == 0 || fi.IsDir || fi.Mode != "-rw-r-----" {
		t.Fatalf("stat printed %q (%v)", out, err)
	}
	if out, err := runStdout(t, bin, "store", "cat", "site/big.bin", a, b); err != nil || out != big {
		t.Fatalf("cat: %d bytes (%v)", len(out), err)
	}
	if out, err := run(t, bin, "store", "cat", "site/nope", a, b); err == nil || !strings.Contains(out, "not exist") {
		t.Fatalf("cat of a missing file: %v\n%s", err, out)
	}
	out, err = runStdout(t, bin, "store", "journal", "0", a, b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "pending record intent#") || !strings.Contains(out, "1 pending records") {
		t.Fatalf("journal 0:\n%s", out)
	}
	if out, err := run(t, bin, "store", "journal", "x", a, b); err == nil || !strings.Contains(out, "not a slot") {
		t.Fatalf("journal x: %v\n%s", err, out)
	}
	c := etcdtest.NewCluster(t, 1)
	out, err = run(t, bin, "store", "check", "--online", "--etcd", strings.Join(c.Endpoints, ","), "--etcd-prefix", "/shoal/test", a, b)
	if err != nil || !strings.Contains(out, "0 problems") {
		t.Fatalf("check --online: %v\n%s", err, out)
	}
	if out, err := run(t, bin, "store", "ls", "--online", "site", a, b); err == nil || !strings.Contains(out, "needs --etcd") {
		t.Fatalf("--online without --etcd: %v\n%s", err, out)
	}
}
