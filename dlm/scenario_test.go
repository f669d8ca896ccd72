package dlm

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// runScenarios runs every file of dir with datadriven (the format
// etcd-io/raft's tests use): a command line, "----", the expected output
// up to a blank line; "#" starts a comment. It calls check after each
// command. Run with -rewrite to record new outputs.
func runScenarios(t *testing.T, dir string, newRunner func(t *testing.T) scenarioRunner) {
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files in %s: %v", dir, err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			r := newRunner(t)
			datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
				args := []string{d.Cmd}
				for _, a := range d.CmdArgs {
					args = append(args, a.String())
				}
				out, err := r.exec(args)
				if err != nil {
					out += "error: " + err.Error() + "\n"
				}
				if err := r.check(); err != nil {
					t.Fatalf("%s: %s: check failed: %v", d.Pos, d.Cmd, err)
				}
				return out
			})
		})
	}
}

type scenarioRunner interface {
	exec(args []string) (string, error)
	check() error
}

// tableRunner drives a Table from scenario commands:
//
//	request REV ID NODE/INC RESOURCE MODE [recovery] [noqueue] [fail-on-deadlock]
//	release REV ID
//	down REV NODE/INC
//	lvb REV RESOURCE VALUE|invalid
//	locks | graph | victims
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
			case "fail-on-deadlock":
				req.FailOnDeadlock = true
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
	case "victims":
		v := r.t.DeadlockVictims()
		if len(v) == 0 {
			return "(none)\n", nil
		}
		return strings.Join(v, "\n") + "\n", nil
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
