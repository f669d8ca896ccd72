package session_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/shoal-ha/shoal/web/internal/memstore"
	"github.com/shoal-ha/shoal/web/session"
)

// world is what a scenario drives: one volume, nodes on slots, the engine,
// and what the cluster knows about each incarnation.
type world struct {
	t      *testing.T
	now    time.Time
	vol    *memstore.Volume
	eng    *session.Engine
	nodes  map[string]*node
	states map[session.Owner]session.OwnerState
	// pending holds intents journaled but not applied yet, by key.
	pending map[string]session.Intent
	attempt int
}

type node struct {
	name  string
	slot  int
	owner session.Owner
	h     *memstore.Node
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), eng: session.NewEngine(session.DefaultLayout()),
		nodes: map[string]*node{}, states: map[session.Owner]session.OwnerState{}, pending: map[string]session.Intent{}}
	w.vol = memstore.New(func() time.Time { return w.now })
	return w
}

// sid turns a scenario's short session name into a valid id.
func sid(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:16])
}

func (w *world) liveness(o session.Owner) session.OwnerState {
	if s, ok := w.states[o]; ok {
		return s
	}
	return session.OwnerRecovered
}

func (w *world) node(td *datadriven.TestData, key string) *node {
	var name string
	td.ScanArgs(w.t, key, &name)
	n := w.nodes[name]
	if n == nil {
		td.Fatalf(w.t, "no node %q", name)
	}
	return n
}

func (w *world) op(td *datadriven.TestData) session.Op {
	var kind, sess string
	td.ScanArgs(w.t, "op", &kind)
	td.ScanArgs(w.t, "session", &sess)
	op := session.Op{Kind: session.OpKind(kind), Session: sid(sess)}
	if kind == "set" || kind == "add" || kind == "append" {
		var name, value string
		td.ScanArgs(w.t, "name", &name)
		td.ScanArgs(w.t, "value", &value)
		body := fmt.Sprintf(`{"op":%q,"value":%s}`, kind, value)
		var err error
		if op, err = session.ParseVarOp(sid(sess), name, []byte(body)); err != nil {
			td.Fatalf(w.t, "%v", err)
		}
	}
	return op
}

func fmtResponse(r session.Response) string {
	s := fmt.Sprintf("%d %s", r.Status, r.Body)
	return strings.TrimSpace(s)
}

// begin runs Begin in a transaction of n.
func (w *world) begin(n *node, key, fp string, op session.Op) (session.Decision, error) {
	w.attempt++
	req := session.Request{Key: key, Fingerprint: fp, Op: op, Attempt: fmt.Sprintf("a%d", w.attempt)}
	var d session.Decision
	err := n.h.Update(context.Background(), func(tx session.Tx) error {
		var err error
		d, err = w.eng.Begin(tx, req, n.owner, w.liveness, w.now)
		return err
	})
	return d, err
}

func (w *world) apply(n *node, in session.Intent) (session.Response, error) {
	var r session.Response
	err := n.h.Update(context.Background(), func(tx session.Tx) error {
		var err error
		r, err = w.eng.Apply(tx, in, w.now)
		return err
	})
	return r, err
}

func (w *world) kill(n *node) {
	w.vol.Fence(n.slot)
	w.states[n.owner] = session.OwnerRecovering
}

func (w *world) run(td *datadriven.TestData) string {
	switch td.Cmd {
	case "node":
		var name string
		var slot int
		td.ScanArgs(w.t, "name", &name)
		td.ScanArgs(w.t, "slot", &slot)
		n := &node{name: name, slot: slot, owner: session.Owner{Node: name, Incarnation: "1"}, h: w.vol.Node(slot)}
		w.nodes[name] = n
		w.states[n.owner] = session.OwnerLive
		return "ok"
	case "request", "begin":
		n := w.node(td, "node")
		var key string
		td.ScanArgs(w.t, "key", &key)
		op := w.op(td)
		fp := session.Fingerprint("POST", fmt.Sprintf("%s/%s/%s", op.Kind, op.Session, op.Name), op.Value)
		if td.HasArg("fp") {
			td.ScanArgs(w.t, "fp", &fp)
		}
		crash := ""
		if td.HasArg("crash") {
			td.ScanArgs(w.t, "crash", &crash)
		}
		if crash == "before-intent" {
			w.kill(n)
			return "killed before the intent"
		}
		d, err := w.begin(n, key, fp, op)
		if err != nil {
			return "error: " + err.Error()
		}
		out := d.Kind.String()
		switch d.Kind {
		case session.Replay:
			return out + " " + fmtResponse(d.Response)
		case session.Busy, session.Recovering, session.Mismatch:
			return out + " owner=" + d.Owner.String()
		}
		if td.Cmd == "begin" || crash == "after-intent" {
			w.pending[key] = d.Intent
			if crash != "" {
				w.kill(n)
				return out + "; killed after the intent"
			}
			return out
		}
		r, err := w.apply(n, d.Intent)
		if err != nil {
			return out + "; apply error: " + err.Error()
		}
		if crash == "after-apply" {
			w.kill(n)
			return out + "; applied, killed before the answer"
		}
		return out + "; " + fmtResponse(r)
	case "apply":
		n := w.node(td, "node")
		var key string
		td.ScanArgs(w.t, "key", &key)
		in, ok := w.pending[key]
		if !ok {
			td.Fatalf(w.t, "no pending intent for %q", key)
		}
		r, err := w.apply(n, in)
		if err != nil {
			return "error: " + err.Error()
		}
		delete(w.pending, key)
		return fmtResponse(r)
	case "abandon":
		n := w.node(td, "node")
		var key string
		td.ScanArgs(w.t, "key", &key)
		in := w.pending[key]
		err := n.h.Update(context.Background(), func(tx session.Tx) error { return w.eng.Abandon(tx, in) })
		if err != nil {
			return "error: " + err.Error()
		}
		delete(w.pending, key)
		return "ok"
	case "kill":
		w.kill(w.node(td, "node"))
		return "ok"
	case "recover":
		dead := w.node(td, "dead")
		by := w.node(td, "by")
		var lines []string
		_, err := w.vol.Replay(context.Background(), by.slot, dead.slot, func(tx session.Tx, rec memstore.Record) error {
			if rec.Kind != session.RecordIntent {
				return nil
			}
			o, r, err := w.eng.Recover(tx, rec.Payload, w.now)
			if err != nil {
				return err
			}
			line := fmt.Sprintf("seq %d: %s", rec.Seq, o)
			if o != session.Gone {
				line += " " + fmtResponse(r)
			}
			lines = append(lines, line)
			return nil
		})
		if err != nil {
			lines = append(lines, "error: "+err.Error())
		} else {
			w.states[dead.owner] = session.OwnerRecovered
		}
		if len(lines) == 0 {
			return "nothing to replay"
		}
		return strings.Join(lines, "\n")
	case "restart":
		n := w.node(td, "node")
		w.vol.Unfence(n.slot)
		var inc string
		td.ScanArgs(w.t, "inc", &inc)
		n.owner = session.Owner{Node: n.name, Incarnation: inc}
		w.states[n.owner] = session.OwnerLive
		return "ok"
	case "get":
		var sess string
		td.ScanArgs(w.t, "session", &sess)
		s, err := w.eng.ReadSession(fsReader{w.vol.Node(0)}, sid(sess))
		if err != nil {
			return "error: " + err.Error()
		}
		if s == nil {
			return "no session"
		}
		names := make([]string, 0, len(s.Vars))
		for k := range s.Vars {
			names = append(names, k)
		}
		sort.Strings(names)
		parts := []string{fmt.Sprintf("version %d", s.Version)}
		for _, k := range names {
			parts = append(parts, fmt.Sprintf("%s=%s", k, s.Vars[k]))
		}
		return strings.Join(parts, " ")
	case "advance":
		var d string
		td.ScanArgs(w.t, "by", &d)
		dur, err := time.ParseDuration(d)
		if err != nil {
			td.Fatalf(w.t, "%v", err)
		}
		w.now = w.now.Add(dur)
		return "ok"
	case "collect":
		var ret string
		td.ScanArgs(w.t, "retention", &ret)
		dur, _ := time.ParseDuration(ret)
		n := w.node(td, "node")
		names, err := w.eng.Layout.KeyNames(n.h)
		if err != nil {
			return "error: " + err.Error()
		}
		var removed int
		err = n.h.Update(context.Background(), func(tx session.Tx) error {
			var err error
			removed, err = w.eng.Collect(tx, names, w.now, dur)
			return err
		})
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("collected %d", removed)
	}
	td.Fatalf(w.t, "unknown command %q", td.Cmd)
	return ""
}

func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		w := newWorld(t)
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			w.t = t
			out := w.run(td)
			if err := w.eng.Check(w.vol.Node(0)); err != nil {
				t.Fatalf("%s: check after %q: %v", td.Pos, td.Cmd, err)
			}
			return out + "\n"
		})
	})
}
