// Package webtest holds what tests of the web tier share, in-process and
// across processes: a client that retries a request with the same
// Idempotency-Key on the other nodes until it gets an answer, a recorder of
// the history of session operations, and the porcupine model that checks
// such a history for linearizability.
package webtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Client sends requests to a cluster's nodes and retries, with the same
// Idempotency-Key, on another node when a node does not answer, answers 503
// (recovery running), or 409 (the first try is still being worked on).
type Client struct {
	HTTP *http.Client
	// Nodes returns the base URLs ("http://127.0.0.2:8080") to try; a
	// retry goes to another one when there is one.
	Nodes func() []string
	// Backoff is the pause between tries. Default 20ms.
	Backoff time.Duration
	// InTurn tries the nodes in their order, as the demo's counter page
	// does: a node that answers 503 or 409 is asked again (another node
	// would say the same while the key's recovery or first try runs), and
	// the next node is tried only when one does not answer. Clients with
	// the same Nodes then meet on one survivor, whose group commit takes
	// their requests together, instead of moving the session's and the
	// keys' locks between nodes on every try. False: another node, drawn
	// at random, on each try.
	InTurn bool
}

// Result is a request's definitive answer.
type Result struct {
	Status   int
	Body     []byte
	Replayed bool
	// Tries counts the requests sent, Node the base URL that answered.
	Tries int
	Node  string
}

// ErrNoAnswer: no node gave a definitive answer before ctx ended. The
// request may or may not have been applied; retrying with the same key is
// safe.
var ErrNoAnswer = errors.New("webtest: no definitive answer")

// NewKey returns a fresh idempotency key.
func NewKey() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func pick(n int) int {
	if n <= 1 {
		return 0
	}
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}

// Do sends method path with body (and the key when key != "") until a node
// answers definitively, or ctx ends.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, key string) (Result, error) {
	backoff := c.Backoff
	if backoff <= 0 {
		backoff = 20 * time.Millisecond
	}
	last := ""
	tries, turn := 0, 0
	var lastErr error
	for ctx.Err() == nil {
		nodes := c.Nodes()
		if len(nodes) == 0 {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		node := nodes[pick(len(nodes))]
		switch {
		case c.InTurn:
			node = nodes[turn%len(nodes)]
		case node == last && len(nodes) > 1:
			node = nodes[(indexOf(nodes, node)+1)%len(nodes)]
		}
		last = node
		tries++
		req, err := http.NewRequestWithContext(ctx, method, node+path, bytes.NewReader(body))
		if err != nil {
			return Result{}, err
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", strconv.Quote(key))
		}
		if len(body) > 0 {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.HTTP.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusConflict {
				return Result{Status: resp.StatusCode, Body: b, Replayed: resp.Header.Get("Idempotent-Replayed") == "true", Tries: tries, Node: node}, nil
			}
			lastErr = fmt.Errorf("%s: %d %s", node, resp.StatusCode, strings.TrimSpace(string(b)))
			if rerr != nil {
				turn++
			}
		} else {
			lastErr = err
			turn++
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
	}
	return Result{Tries: tries}, fmt.Errorf("%w after %d tries: %v", ErrNoAnswer, tries, lastErr)
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return 0
}

// Input is one operation on one variable of a session, as the model sees
// it: Kind is "set", "add", "append" or "get"; Value the operand.
type Input struct {
	Session string
	Var     string
	Kind    string
	Value   int64
}

// Output is what the operation answered: the variable's value as compact
// JSON ("null" when a get found none). Unknown marks an operation that got
// no answer (it may or may not have taken effect).
type Output struct {
	Value   string
	Unknown bool
}

// Body is the JSON body of a mutation of in.
func (in Input) Body() []byte {
	return []byte(fmt.Sprintf(`{"op":%q,"value":%d}`, in.Kind, in.Value))
}

// Recorder collects a history of operations from many goroutines.
type Recorder struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

// NewRecorder starts a history now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now is the recorder's clock, for Call and Return.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Add records an operation; an Unknown output never returned.
func (r *Recorder) Add(client int, in Input, call int64, out Output, ret int64) {
	if out.Unknown {
		ret = 1 << 62
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// Len is the number of operations recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// Check checks the history for linearizability against Model.
func (r *Recorder) Check(timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	r.mu.Lock()
	ops := append([]porcupine.Operation(nil), r.ops...)
	r.mu.Unlock()
	return porcupine.CheckOperationsVerbose(Model, ops, timeout)
}

// Model is the sequential specification of one variable per partition
// (session, variable): set replaces it, add adds to an integer (missing is
// 0), append appends to an array (missing is []), get reads it. A mutation
// answers the new value.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			in := op.Input.(Input)
			k := in.Session + "/" + in.Var
			if _, ok := by[k]; !ok {
				order = append(order, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return "null" },
	Step: func(state, input, output any) (bool, any) {
		st := state.(string)
		in := input.(Input)
		out := output.(Output)
		next, err := StepValue(st, in)
		if err != nil {
			return false, st
		}
		if in.Kind == "get" {
			return out.Unknown || out.Value == st, st
		}
		return out.Unknown || out.Value == next, next
	},
	DescribeOperation: func(input, output any) string {
		in := input.(Input)
		out := output.(Output)
		if out.Unknown {
			return fmt.Sprintf("%s %s %d -> ?", in.Var, in.Kind, in.Value)
		}
		return fmt.Sprintf("%s %s %d -> %s", in.Var, in.Kind, in.Value, out.Value)
	},
}

// StepValue applies in to a variable whose value is state (compact JSON).
func StepValue(state string, in Input) (string, error) {
	switch in.Kind {
	case "get":
		return state, nil
	case "set":
		return strconv.FormatInt(in.Value, 10), nil
	case "add":
		cur := int64(0)
		if state != "null" {
			n, err := strconv.ParseInt(state, 10, 64)
			if err != nil {
				return "", err
			}
			cur = n
		}
		return strconv.FormatInt(cur+in.Value, 10), nil
	case "append":
		var arr []json.RawMessage
		if state != "null" {
			if err := json.Unmarshal([]byte(state), &arr); err != nil {
				return "", err
			}
		}
		arr = append(arr, json.RawMessage(strconv.FormatInt(in.Value, 10)))
		b, _ := json.Marshal(arr)
		return string(b), nil
	}
	return "", fmt.Errorf("unknown kind %q", in.Kind)
}
