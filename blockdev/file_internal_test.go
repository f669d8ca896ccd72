package blockdev

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// TestDirectFallback: on a file system that refuses O_DIRECT the file
// backend falls back to buffered I/O, says so in the log, and works.
func TestDirectFallback(t *testing.T) {
	saved := openDirect
	defer func() { openDirect = saved }()
	openDirect = func(string, int) (*os.File, error) { return nil, &os.PathError{Op: "open", Err: unix.EINVAL} }
	var logs bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	d, err := OpenFile(t.TempDir()+"/leg.img", OpenOptions{Create: true, CreateSize: 1 << 20, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Direct() {
		t.Fatal("O_DIRECT reported although the open refused it")
	}
	if !strings.Contains(logs.String(), "O_DIRECT not available") {
		t.Fatalf("no log line about the fallback: %q", logs.String())
	}
	p := bytes.Repeat([]byte{3}, 4096)
	ctx := context.Background()
	if err := d.WriteAt(ctx, p, 4096); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := d.ReadAt(ctx, got, 4096); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back: %v", err)
	}
}
