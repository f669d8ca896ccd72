package recovery_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// lineCatcher keeps the log lines written through it.
type lineCatcher struct{ lines chan string }

func (c lineCatcher) Write(p []byte) (int, error) {
	select {
	case c.lines <- string(p):
	default:
	}
	return len(p), nil
}

// TestStepRunningLongReportsWhatItWaitsFor: a resync step that does not
// return says, once past its bound and again after each further bound,
// what it waits for (resource, holder, queue position), in the log and in
// the recovery record; the report goes when the step finishes.
func TestStepRunningLongReportsWhatItWaitsFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clk := clock.NewFake(time.Unix(1000, 0))
	ms := recovery.NewMemStore()
	ms.Elect("c")
	entered, release := make(chan struct{}), make(chan struct{})
	lines := lineCatcher{lines: make(chan string, 64)}
	cfg := recovery.DefaultConfig()
	cfg.Name, cfg.Store, cfg.Clock = "c", ms.As("c"), clk
	cfg.Fencer = fencing.FencerFunc(func(context.Context, fencing.NodeRef) error { return nil })
	cfg.Hooks = recovery.HookFuncs{Resync: func(ctx context.Context, _ fencing.NodeRef) error {
		close(entered)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	wait := recovery.Wait{What: "region lock", Resource: "vol[8MiB,9MiB)", Holders: []string{"n2/i2 EX orphan"}, QueuePosition: 1}
	cfg.Waits = func(v fencing.NodeRef, step recovery.Step) []recovery.Wait {
		if step != recovery.StepResync {
			return nil
		}
		return []recovery.Wait{wait}
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: lines, Level: hclog.Warn})
	e, err := recovery.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	victim := fencing.NodeRef{Name: "n2", Incarnation: "i2", Key: 7}
	done := make(chan error, 1)
	go func() { _, err := e.Run(ctx, victim); done <- err }()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("resync never ran")
	}
	load := func() recovery.Record {
		rec, _, err := ms.As("c").Load(ctx, victim)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	if err := clk.BlockUntilContext(ctx, 1); err != nil { // the report timer
		t.Fatal(err)
	}
	clk.Advance(4 * time.Second)
	if rec := load(); len(rec.Waiting) != 0 {
		t.Fatalf("reported before the bound: %+v", rec.Waiting)
	}
	clk.Advance(time.Second)
	var line string
	select {
	case line = <-lines.lines:
	case <-ctx.Done():
		t.Fatal("no log line past the bound")
	}
	want := "region lock vol[8MiB,9MiB) held by n2/i2 EX orphan behind 1 queued"
	if !strings.Contains(line, "recovery step still running") || !strings.Contains(line, want) {
		t.Fatalf("log line %q does not say what the step waits for", line)
	}
	testutil.WaitFor(t, 10*time.Second, "the record to show what the step waits for", func() bool { return len(load().Waiting) > 0 })
	if rec := load(); rec.Next() != recovery.StepResync || rec.Waiting[0].String() != want {
		t.Fatalf("record at %s waits for %+v", rec.Next(), rec.Waiting)
	}
	var table strings.Builder
	if err := recovery.WriteTable(&table, []recovery.Record{load()}, clk.Now()); err != nil || !strings.Contains(table.String(), want) {
		t.Fatalf("table does not show the wait (%v):\n%s", err, table.String())
	}
	// Reported again after every further bound.
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second)
	select {
	case <-lines.lines:
	case <-ctx.Done():
		t.Fatal("no second report")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rec := load(); !rec.Done() || len(rec.Waiting) != 0 {
		t.Fatalf("after the step: done %v, waiting %+v", rec.Done(), rec.Waiting)
	}
}
