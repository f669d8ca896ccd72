package keys

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestContract holds the table, the package doc, the Space methods and
// the rest of the module to one map of the keyspace.
func TestContract(t *testing.T) {
	p := Space("P")
	for _, e := range Table {
		if got := e.Example(p); got != e.Pattern {
			t.Errorf("row %s: its Space method builds %s", e.Pattern, got)
		}
	}

	// The doc's table and Table list the same rows in the same order.
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//\tP/"); ok {
			documented = append(documented, "P/"+strings.Fields(rest)[0])
		}
	}
	var listed []string
	for _, e := range Table {
		listed = append(listed, e.Pattern)
	}
	if !reflect.DeepEqual(documented, listed) {
		t.Errorf("the package doc's table lists\n%v\nbut Table lists\n%v", documented, listed)
	}

	// No row's fixed part is a prefix of another's: a watch or a listing
	// of one kind of key never sees keys of another kind.
	fixed := func(pat string) string {
		parts := strings.Split(pat, "/")
		for i, s := range parts {
			if i > 0 && (s == strings.ToUpper(s) || s == "...") {
				return strings.Join(parts[:i], "/") + "/"
			}
		}
		return pat
	}
	for i, a := range Table {
		for j, b := range Table {
			if i != j && strings.HasPrefix(fixed(b.Pattern), fixed(a.Pattern)) {
				t.Errorf("%s (fixed part %s) would list keys of %s", a.Pattern, fixed(a.Pattern), b.Pattern)
			}
		}
	}
}

// TestNoKeySpelledElsewhere: outside this package no Go file (tests
// aside, which may spell keys as data) spells a
// segment of the keyspace in a string literal, so a renamed key is
// renamed everywhere at once.
func TestNoKeySpelledElsewhere(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	segments := []string{"/members/", "/coordinator", "/recovery/", "/fence/", "/slots/", "/volumes/", "/dlm/", "/probe"}
	self, _ := filepath.Abs(".")
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == self || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if _, ok := n.(*ast.ImportSpec); ok {
				return false
			}
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			for _, seg := range segments {
				if strings.Contains(s, seg) || s == "volumes" || strings.HasPrefix(s, "/shoal/") {
					rel, _ := filepath.Rel(root, path)
					t.Errorf("%s:%d: %q spells a key segment; use keys.Space", rel, fset.Position(lit.Pos()).Line, s)
					break
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMemberRecordFields: the member record's JSON names are part of the
// keyspace's contract (other versions of the daemon and lockctl read
// them).
func TestMemberRecordFields(t *testing.T) {
	slot := 1
	b, err := json.Marshal(MemberRecord{Name: "n", Incarnation: "i", Kind: KindNode, Lease: 1, ClientURL: "c", PeerURL: "p", AdminURL: "a", Slot: &slot, HeartbeatAddr: "h", Leaving: true})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	want := []string{"admin_url", "client_url", "heartbeat_addr", "incarnation", "kind", "lease", "leaving", "name", "peer_url", "slot", "started"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("member record fields %v, want %v", got, want)
	}
}

func TestSpaceParsers(t *testing.T) {
	s := Cluster("c1")
	if s.Root() != "/shoal/c1" || Of("/shoal/c1/") != s {
		t.Fatalf("root %q, Of %q", s.Root(), Of("/shoal/c1/"))
	}
	if name, ok := s.MemberName(s.Member("node1")); !ok || name != "node1" {
		t.Errorf("MemberName(Member(node1)) = %q, %v", name, ok)
	}
	for _, k := range []string{s.Members(), s.Member("a") + "/b", s.Recovery("a", "b")} {
		if _, ok := s.MemberName(k); ok {
			t.Errorf("MemberName(%q) accepted", k)
		}
	}
	req := s.DLMRequest("n", "i", 42)
	if name, inc, ok := s.DLMRequestOwner(req); !ok || name != "n" || inc != "i" {
		t.Errorf("DLMRequestOwner(%q) = %q %q %v", req, name, inc, ok)
	}
	if got, want := s.DLMForcedRequest(req), s.DLMForced()+"n/i/000000000000002a"; got != want {
		t.Errorf("forced %q, want %q", got, want)
	}
	for _, k := range []string{s.DLMOwnerRequests("n", "i"), s.DLMRequests() + "n/i", s.DLMValueBlock("x")} {
		if _, _, ok := s.DLMRequestOwner(k); ok {
			t.Errorf("DLMRequestOwner(%q) accepted", k)
		}
	}
}
