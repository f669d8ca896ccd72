package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"testing"
	"testing/fstest"
)

func TestBasicTree(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	lm := NewMemLocks()
	s := openNode(t, dev, lm, "a", 0)
	if err := s.MkdirAll("www/css", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFile("www/index.html", []byte("<h1>hi</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	if err := s.WriteFile("www/big.bin", big, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadFile("www/big.bin")
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big read back: %v (len %d)", err, len(got))
	}
	if _, err := s.ReadFile("www/nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := s.Mkdir("www", 0o755); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("mkdir existing: %v", err)
	}
	if err := s.Remove("www"); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("remove non-empty: %v", err)
	}
	// Rename over an existing file publishes the new one.
	if err := s.WriteFile("www/tmp", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename("www/tmp", "www/index.html"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ReadFile("www/index.html"); string(got) != "new" {
		t.Fatalf("after rename-over: %q", got)
	}
	if err := s.Rename("www/css", "moved"); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename("www", "moved/inside"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat("moved/inside/big.bin"); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename("moved", "moved/inside/x"); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("dir under itself: %v", err)
	}
	// File handle writes.
	f, err := s.OpenFile("moved/f", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello world"), 5000); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5011)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if string(buf[:3]) != "abc" || string(buf[5000:]) != "hello world" || buf[100] != 0 {
		t.Fatalf("read before commit: %q...%q", buf[:3], buf[5000:])
	}
	if err := f.Truncate(5005); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err = s.ReadFile("moved/f")
	if err != nil || len(got) != 5005 || string(got[5000:]) != "hello" {
		t.Fatalf("after close: %v len %d", err, len(got))
	}
	if _, err := s.OpenFile("moved/f", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL: %v", err)
	}
	f, _ = s.OpenFile("moved/f", os.O_RDWR, 0)
	f.Truncate(10)
	f.Truncate(20)
	f.Close()
	got, _ = s.ReadFile("moved/f")
	if !bytes.Equal(got, append([]byte("abc"), make([]byte, 17)...)) {
		t.Fatalf("truncate then grow: %q", got)
	}
	if err := s.RemoveAll("moved"); err != nil {
		t.Fatal(err)
	}
	ents, _ := s.ReadDir(".")
	if len(ents) != 0 {
		t.Fatalf("left after RemoveAll: %v", ents)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, dev)
	st, _ := CheckDevice(context.Background(), dev)
	sb, _ := ReadSuperblock(context.Background(), dev)
	if want := sb.Blocks - sb.AGStart - uint64(sb.AGCount) - 1; st.FreeBlocks != want {
		t.Fatalf("free blocks %d after removing everything, want %d", st.FreeBlocks, want)
	}
}

func TestFSTest(t *testing.T) {
	dev := newMem(t, 4096, FormatOptions{})
	s := openNode(t, dev, NewMemLocks(), "a", 0)
	defer s.Close()
	files := map[string]string{
		"index.html":          "<html>home</html>",
		"css/site.css":        "body{}",
		"img/logo.png":        string(bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 3000)),
		"docs/a/b/c/deep.txt": "deep",
		"empty":               "",
	}
	var names []string
	for name, data := range files {
		if err := s.MkdirAll(dirOf(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	for i := 0; i < 300; i++ {
		name := fmt.Sprintf("many/f%03d", i)
		if err := s.MkdirAll("many", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := s.WriteFile(name, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	names = append(names, "many/f000", "many/f299")
	if err := fstest.TestFS(s, names...); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Check(context.Background())
	if err != nil || rep.Err() != nil {
		t.Fatalf("online check: %v %v", err, rep.Err())
	}
	if rep.Files != 305 {
		t.Fatalf("check counted %d files", rep.Files)
	}
	f, _ := s.Open("img/logo.png")
	data, _ := io.ReadAll(f)
	f.Close()
	if string(data) != files["img/logo.png"] {
		t.Fatal("io.ReadAll differs")
	}
}

func dirOf(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[:i]
		}
	}
	return "."
}
