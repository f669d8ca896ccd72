package store_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/store"
)

// linOps is how many operations each node does in TestLinearizableNodes;
// raise it for a longer run: go test ./store -run Linearizable -store.linops 5000
var linOps = flag.Int("store.linops", 300, "operations per node in TestLinearizableNodes")

// A file is a register: written whole, read whole, removed.
type fileInput struct {
	op    string // "read", "write", "remove"
	path  string
	value string // write: the value's identity
}

type fileOutput struct {
	exists bool   // read: the file was there; remove: it was there
	value  string // read: the identity read
}

// absent is the register's value when the file does not exist.
const absent = "\x00absent"

// fileModel is a register per path (porcupine partitions the history by
// path: linearizability composes, so each file is checked alone).
var fileModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			p := op.Input.(fileInput).path
			if _, ok := by[p]; !ok {
				order = append(order, p)
			}
			by[p] = append(by[p], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, p := range order {
			out = append(out, by[p])
		}
		return out
	},
	Init: func() interface{} { return absent },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st, in, out := state.(string), input.(fileInput), output.(fileOutput)
		switch in.op {
		case "read":
			if st == absent {
				return !out.exists, st
			}
			return out.exists && out.value == st, st
		case "write":
			return true, in.value
		case "remove":
			return out.exists == (st != absent), absent
		}
		return false, st
	},
	Equal: func(a, b interface{}) bool { return a == b },
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(fileInput), output.(fileOutput)
		switch in.op {
		case "read":
			if !out.exists {
				return fmt.Sprintf("read %s -> absent", in.path)
			}
			return fmt.Sprintf("read %s -> %s", in.path, out.value)
		case "write":
			return fmt.Sprintf("write %s <- %s", in.path, in.value)
		}
		return fmt.Sprintf("remove %s -> existed %v", in.path, out.exists)
	},
}

// content is what a write of identity id puts in a file: the identity, a
// separator and padding, so files are sometimes inline, sometimes extents.
func content(id string, rng *rand.Rand) []byte {
	pad := 0
	switch rng.IntN(4) {
	case 1:
		pad = 2000
	case 2:
		pad = 3*store.BlockSize + rng.IntN(store.BlockSize)
	}
	return []byte(id + "|" + strings.Repeat("p", pad))
}

// identity checks a file's contents and returns the identity in it.
func identity(b []byte) (string, error) {
	id, pad, ok := strings.Cut(string(b), "|")
	if !ok || strings.Trim(pad, "p") != "" {
		return "", fmt.Errorf("torn or foreign contents (%d bytes, starting %q)", len(b), b[:min(len(b), 40)])
	}
	return id, nil
}

// TestLinearizableNodes: three nodes share one store and do random reads,
// whole-file writes and removes on files of a shared directory and of a
// private directory each, at once. The history, with each operation's call
// and return times, must be linearizable against a register per file
// (porcupine): every read sees every write that completed before it
// started, on any node, and nothing in between is seen out of order. The
// check is clean at the end.
func TestLinearizableNodes(t *testing.T) {
	ctx := context.Background()
	dev, err := blockdev.NewMem(16384*store.BlockSize, 512)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Format(ctx, dev, store.FormatOptions{Slots: 4}); err != nil {
		t.Fatal(err)
	}
	lm := store.NewMemLocks()
	const nodes = 3
	sts := make([]*store.Store, nodes)
	for i := range sts {
		cfg := store.DefaultConfig(dev, i, lm.Node(fmt.Sprintf("n%d", i)))
		cfg.Logger = testlog.New(t, fmt.Sprintf("n%d", i))
		if sts[i], err = store.Open(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"shared", "own0", "own1", "own2"} {
		if err := sts[0].MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d operations per node", seed, *linOps)
	start := time.Now()
	now := func() int64 { return time.Since(start).Nanoseconds() }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
	)
	var wg sync.WaitGroup
	errc := make(chan error, nodes)
	for i, st := range sts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for k := 0; k < *linOps; k++ {
				dir := "shared"
				if rng.IntN(3) == 0 {
					dir = fmt.Sprintf("own%d", i)
				}
				in := fileInput{path: fmt.Sprintf("%s/f%d", dir, rng.IntN(4))}
				var out fileOutput
				call := now()
				switch r := rng.IntN(10); {
				case r < 5:
					in.op = "read"
					b, err := st.ReadFile(in.path)
					switch {
					case errors.Is(err, fs.ErrNotExist):
					case err != nil:
						errc <- fmt.Errorf("node %d: read %s: %w", i, in.path, err)
						return
					default:
						out.exists = true
						if out.value, err = identity(b); err != nil {
							errc <- fmt.Errorf("node %d: read %s: %w", i, in.path, err)
							return
						}
					}
				case r < 9:
					in.op = "write"
					in.value = fmt.Sprintf("n%d.%d", i, k)
					if err := st.WriteFile(in.path, content(in.value, rng), 0o644); err != nil {
						errc <- fmt.Errorf("node %d: write %s: %w", i, in.path, err)
						return
					}
				default:
					in.op = "remove"
					err := st.Remove(in.path)
					switch {
					case errors.Is(err, fs.ErrNotExist):
					case err != nil:
						errc <- fmt.Errorf("node %d: remove %s: %w", i, in.path, err)
						return
					default:
						out.exists = true
					}
				}
				ret := now()
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: i, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	res, info := porcupine.CheckOperationsVerbose(fileModel, history, time.Minute)
	switch res {
	case porcupine.Illegal:
		if f, err := os.CreateTemp("", "store-history-*.html"); err == nil {
			if porcupine.Visualize(fileModel, info, f) == nil {
				t.Logf("the history, drawn by porcupine: %s", f.Name())
			}
			f.Close()
		}
		t.Fatalf("the %d operations are not linearizable (seed %d)", len(history), seed)
	case porcupine.Unknown:
		t.Fatalf("porcupine timed out on %d operations", len(history))
	}
	for _, st := range sts {
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := store.CheckDevice(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestFileModelRejectsStaleRead: the model is not vacuous: a read that
// returns an overwritten value after the overwrite completed, or a removed
// file, is refused.
func TestFileModelRejectsStaleRead(t *testing.T) {
	w := func(c int, v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: fileInput{op: "write", path: "f", value: v}, Output: fileOutput{}, Call: call, Return: ret}
	}
	r := func(c int, v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: fileInput{op: "read", path: "f"}, Output: fileOutput{exists: v != "", value: v}, Call: call, Return: ret}
	}
	rm := func(c int, existed bool, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: fileInput{op: "remove", path: "f"}, Output: fileOutput{exists: existed}, Call: call, Return: ret}
	}
	for name, tc := range map[string]struct {
		h  []porcupine.Operation
		ok bool
	}{
		"fresh read":              {[]porcupine.Operation{w(0, "a", 0, 1), w(0, "b", 2, 3), r(1, "b", 4, 5)}, true},
		"stale read":              {[]porcupine.Operation{w(0, "a", 0, 1), w(0, "b", 2, 3), r(1, "a", 4, 5)}, false},
		"concurrent read, old":    {[]porcupine.Operation{w(0, "a", 0, 1), w(0, "b", 2, 6), r(1, "a", 3, 4)}, true},
		"read after remove":       {[]porcupine.Operation{w(0, "a", 0, 1), rm(1, true, 2, 3), r(2, "a", 4, 5)}, false},
		"remove of a missing one": {[]porcupine.Operation{rm(1, true, 0, 1)}, false},
	} {
		if got := porcupine.CheckOperations(fileModel, tc.h); got != tc.ok {
			t.Errorf("%s: linearizable %v, want %v", name, got, tc.ok)
		}
	}
}
