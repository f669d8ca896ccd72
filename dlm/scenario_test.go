package dlm

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected output of scenario files")

// scenarioCase is one command of a scenario file with its expected output.
type scenarioCase struct {
	line     int
	cmd      string
	expected string
}

// parseScenario reads a scenario file: each case is a command line,
// "----", and the expected output up to a blank line. Lines starting with
// "#" are comments.
func parseScenario(t *testing.T, path string) []scenarioCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []scenarioCase
	sc := bufio.NewScanner(f)
	ln := 0
	var cur *scenarioCase
	inOut := false
	for sc.Scan() {
		ln++
		s := sc.Text()
		switch {
		case cur == nil && (strings.TrimSpace(s) == "" || strings.HasPrefix(s, "#")):
		case cur == nil:
			cur = &scenarioCase{line: ln, cmd: s}
		case !inOut && s == "----":
			inOut = true
		case !inOut:
			t.Fatalf("%s:%d: expected ---- after command", path, ln)
		case strings.TrimSpace(s) == "":
			cases = append(cases, *cur)
			cur, inOut = nil, false
		default:
			cur.expected += s + "\n"
		}
	}
	if cur != nil {
		if !inOut {
			t.Fatalf("%s:%d: command without ----", path, cur.line)
		}
		cases = append(cases, *cur)
	}
	return cases
}

func writeScenario(t *testing.T, path string, cases []scenarioCase, outs []string) {
	t.Helper()
	// Keep the comments that precede each case.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var b strings.Builder
	prev := 0
	for i, c := range cases {
		for _, l := range lines[prev : c.line-1] {
			if strings.HasPrefix(l, "#") {
				b.WriteString(l + "\n")
			}
		}
		b.WriteString(c.cmd + "\n----\n" + outs[i] + "\n")
		prev = c.line
		// skip past this case's own lines
		for prev < len(lines) && strings.TrimSpace(lines[prev]) != "" {
			prev++
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runScenarios runs every file of dir through exec, comparing outputs and
// calling check after each command.
func runScenarios(t *testing.T, dir string, newRunner func(t *testing.T) scenarioRunner) {
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files in %s: %v", dir, err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			cases := parseScenario(t, path)
			r := newRunner(t)
			var outs []string
			for _, c := range cases {
				out, err := r.exec(strings.Fields(c.cmd))
				if err != nil {
					out += "error: " + err.Error() + "\n"
				}
				if err := r.check(); err != nil {
					t.Fatalf("%s:%d: %s: check failed: %v", path, c.line, c.cmd, err)
				}
				outs = append(outs, out)
				if !*update && out != c.expected {
					t.Errorf("%s:%d: %s\n got:\n%s want:\n%s", path, c.line, c.cmd, out, c.expected)
				}
			}
			if *update {
				writeScenario(t, path, cases, outs)
			}
		})
	}
}

type scenarioRunner interface {
	exec(args []string) (string, error)
	check() error
}

// tableRunner drives a Table from scenario commands:
//
//	request REV ID NODE/INC RESOURCE MODE [recovery] [noqueue]
//	release REV ID
//	down REV NODE/INC
//	lvb REV RESOURCE VALUE|invalid
//	locks | graph
type tableRunner struct{ t *Table }

func parseOwner(s string) (Owner, error) {
	n, i, ok := strings.Cut(s, "/")
	if !ok {
		return Owner{}, fmt.Errorf("owner %q: want NODE/INCARNATION", s)
	}
	return Owner{Node: n, Incarnation: i}, nil
}

func (r *tableRunner) check() error { return r.t.Check() }

func (r *tableRunner) exec(a []string) (string, error) {
	need := func(n int) error {
		if len(a) < n {
			return fmt.Errorf("%s: want at least %d arguments", a[0], n-1)
		}
		return nil
	}
	rev := func() int64 { v, _ := strconv.ParseInt(a[1], 10, 64); return v }
	var ds []Decision
	var err error
	switch a[0] {
	case "request":
		if err := need(6); err != nil {
			return "", err
		}
		o, err := parseOwner(a[3])
		if err != nil {
			return "", err
		}
		res, err := ParseResource(a[4])
		if err != nil {
			return "", err
		}
		m, err := ParseMode(a[5])
		if err != nil {
			return "", err
		}
		req := Request{ID: a[2], Owner: o, Resource: res, Mode: m}
		for _, f := range a[6:] {
			switch f {
			case "recovery":
				req.Recovery = true
			case "noqueue":
				req.NoQueue = true
			default:
				return "", fmt.Errorf("unknown flag %q", f)
			}
		}
		ds, err = r.t.Request(rev(), req)
		if err != nil {
			return "", err
		}
	case "release":
		if err := need(3); err != nil {
			return "", err
		}
		ds, err = r.t.Release(rev(), a[2])
	case "down":
		if err := need(3); err != nil {
			return "", err
		}
		o, err := parseOwner(a[2])
		if err != nil {
			return "", err
		}
		ds, err = r.t.MemberDown(rev(), o)
		if err != nil {
			return "", err
		}
	case "lvb":
		if err := need(4); err != nil {
			return "", err
		}
		res, err := ParseResource(a[2])
		if err != nil {
			return "", err
		}
		if a[3] == "invalid" {
			err = r.t.SetLVB(rev(), res, nil, false)
		} else {
			err = r.t.SetLVB(rev(), res, []byte(a[3]), true)
		}
		if err != nil {
			return "", err
		}
	case "locks":
		return formatLocks(r.t.Locks()), nil
	case "graph":
		return formatGraph(r.t.WaitFor()), nil
	default:
		return "", fmt.Errorf("unknown command %q", a[0])
	}
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.String() + "\n")
	}
	return b.String(), err
}

func formatLocks(ls []LockInfo) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%s %s %s", l.Resource, l.ID, l.Owner)
		if l.Held {
			fmt.Fprintf(&b, " held=%s token=%s", l.Granted, l.Token)
		}
		if l.Waiting() {
			fmt.Fprintf(&b, " wait=%s", l.Want)
		}
		if l.Orphan {
			b.WriteString(" orphan")
		}
		if l.Recovery {
			b.WriteString(" recovery")
		}
		if l.Blocking {
			fmt.Fprintf(&b, " blocking=%s", l.BlockingMode)
		}
		b.WriteString("\n")
	}
	if b.Len() == 0 {
		return "(empty)\n"
	}
	return b.String()
}

func formatGraph(es []WaitEdge) string {
	var b strings.Builder
	for _, e := range es {
		how := "held by"
		if e.Queued {
			how = "queued behind"
		}
		fmt.Fprintf(&b, "%s (%s) %s %s (%s) on %s\n", e.Waiter, e.WaiterOwner, how, e.Holder, e.HolderOwner, e.Resource)
	}
	for _, c := range OwnerCycles(es) {
		var s []string
		for _, o := range c {
			s = append(s, o.String())
		}
		fmt.Fprintf(&b, "cycle: %s\n", strings.Join(s, " -> "))
	}
	if b.Len() == 0 {
		return "(no waiters)\n"
	}
	return b.String()
}

func TestTableScenarios(t *testing.T) {
	runScenarios(t, "testdata/table", func(t *testing.T) scenarioRunner { return &tableRunner{t: NewTable()} })
}
