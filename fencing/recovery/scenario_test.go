package recovery_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// TestScenarios runs the recovery-order scripts in testdata with
// datadriven (the format of the lock table's scenarios): a command,
// "----", its output up to a blank line. See scenario.exec for the
// commands; -rewrite records new outputs.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runScenario(t, f)
		})
	}
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type scenario struct {
	t       *testing.T
	clk     *clock.Fake
	mem     *recovery.MemStore
	victims []fencing.NodeRef

	mu          sync.Mutex
	events      map[string][]string // victim name -> effects in order
	fails       map[string]int      // "victim step" -> failures left (-1: forever)
	selfFenced  map[string]bool
	crashAfter  map[string]bool // "victim step"
	deposeAfter map[string]bool // "victim step": deposed right after the effect
	barriers    []*barrier
	atBarrier   int // victims' effects waiting at a barrier now
	cancelRun   context.CancelFunc
	runErrs     map[string]error // coordinator -> joined errors of its last run
}

// barrier holds "victim step" members until all of them have arrived;
// with crash, the coordinator dies at that moment instead.
type barrier struct {
	members map[string]bool
	arrived map[string]bool
	all     chan struct{}
	crash   bool
}

func runScenario(t *testing.T, path string) {
	s := &scenario{
		t: t, clk: clock.NewFake(epoch), mem: recovery.NewMemStore(),
		events: map[string][]string{}, fails: map[string]int{}, selfFenced: map[string]bool{},
		crashAfter: map[string]bool{}, deposeAfter: map[string]bool{},
		runErrs: map[string]error{},
	}
	s.mem.AfterSave(s.afterSave)
	datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
		args := []string{d.Cmd}
		for _, a := range d.CmdArgs {
			args = append(args, a.String())
		}
		out, err := s.exec(args)
		if cerr := s.check(); cerr != nil {
			t.Fatalf("%s: %s: check failed: %v", d.Pos, d.Cmd, cerr)
		}
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		return out
	})
}

// check verifies, after every command, what must hold whatever the
// scenario: each victim's record lists its finished steps once each, in
// the design's order; the fence record and the lease revocation exist
// exactly when record-fence is finished; and no step's effect happened
// before the previous step's effect succeeded.
func (s *scenario) check() error {
	for _, v := range s.victims {
		rec, ok, err := s.mem.As("").Load(context.Background(), v)
		if err != nil {
			return err
		}
		if ok {
			for i, h := range rec.History {
				if h.Step != recovery.Step(i+1) {
					return fmt.Errorf("%s: history %d is %s, want %s", v.Name, i, h.Step, recovery.Step(i+1))
				}
			}
			if len(rec.History) != int(rec.Finished) {
				return fmt.Errorf("%s: finished %s with %d steps in the history", v.Name, rec.Finished, len(rec.History))
			}
		}
		_, fenced := s.mem.Fences()[v.String()]
		revoked := slices.Contains(s.mem.Revoked(), v.LeaseID)
		if done := ok && rec.Finished >= recovery.StepRecordFence; fenced != done || revoked != done {
			return fmt.Errorf("%s: record-fence finished %v, fence record %v, lease revoked %v", v.Name, done, fenced, revoked)
		}
		reached := recovery.StepNone
		for _, e := range s.eventsOf(v.Name) {
			st, err := recovery.ParseStep(strings.TrimSuffix(e, "!"))
			if err != nil {
				return err
			}
			if st > reached+1 {
				return fmt.Errorf("%s: %s ran before %s succeeded (events %v)", v.Name, e, reached+1, s.eventsOf(v.Name))
			}
			if !strings.HasSuffix(e, "!") && st > reached {
				reached = st
			}
		}
	}
	return nil
}

func (s *scenario) victim(name string) (fencing.NodeRef, error) {
	for _, v := range s.victims {
		if v.Name == name {
			return v, nil
		}
	}
	return fencing.NodeRef{}, fmt.Errorf("unknown victim %q", name)
}

func parseStep(name string) (recovery.Step, error) { return recovery.ParseStep(name) }

// exec runs one command and returns its output:
//
//	victims N...                  nodes to recover (incarnation "1")
//	fail V STEP N                 STEP of victim V fails N times
//	fail-forever V STEP           STEP of V always fails
//	self-fenced V                 fencing V finds the coordinator fenced
//	crash-after V STEP            the coordinator dies right after recording STEP of V
//	depose-after-effect V STEP    the coordinator is deposed after STEP's effect, before recording it
//	parallel STEP                 STEP of every victim waits until all victims reached it
//	meet V:STEP... [crash]        those steps wait for each other; with crash the
//	                              coordinator dies once all have arrived
//	run C [for DURATION]          elect C and run its recoveries until they end or DURATION of
//	                              fake time; prints how the run ended: ok, deposed, self-fenced, cancelled
//	events V                      the effects seen for V, in order ("step!" is a failed attempt)
//	count V EVENT [at-least=N]    how many times EVENT happened ("at least N" when it did)
//	record V FIELD...             fields of V's record: finished, attempts, coordinator, error;
//	                              attempts>=N and error~TEXT print themselves when they hold
//	history V                     finished steps and who finished them, in order
//	fence V                       whether the fence record exists and the lease was revoked: yes or no
func (s *scenario) exec(f []string) (string, error) {
	out, err := s.exec1(f)
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out, err
}

func (s *scenario) exec1(f []string) (string, error) {
	switch f[0] {
	case "victims":
		for i, n := range f[1:] {
			s.victims = append(s.victims, fencing.NewNodeRef(n, "1", int64(100+i)))
		}
		return "", nil
	case "fail", "fail-forever", "crash-after", "depose-after-effect":
		if len(f) < 3 {
			return "", errors.New("want victim and step")
		}
		if _, err := s.victim(f[1]); err != nil {
			return "", err
		}
		if _, err := parseStep(f[2]); err != nil {
			return "", err
		}
		k := f[1] + " " + f[2]
		switch f[0] {
		case "fail":
			if len(f) < 4 {
				return "", errors.New("want victim, step and count")
			}
			n, err := strconv.Atoi(f[3])
			if err != nil {
				return "", err
			}
			s.fails[k] = n
		case "fail-forever":
			s.fails[k] = -1
		case "crash-after":
			s.crashAfter[k] = true
		case "depose-after-effect":
			s.deposeAfter[k] = true
		}
		return "", nil
	case "self-fenced":
		s.selfFenced[f[1]] = true
		return "", nil
	case "parallel":
		st, err := parseStep(f[1])
		if err != nil {
			return "", err
		}
		b := &barrier{members: map[string]bool{}, arrived: map[string]bool{}, all: make(chan struct{})}
		for _, v := range s.victims {
			b.members[v.Name+" "+st.String()] = true
		}
		s.barriers = append(s.barriers, b)
		return "", nil
	case "meet":
		b := &barrier{members: map[string]bool{}, arrived: map[string]bool{}, all: make(chan struct{})}
		for _, m := range f[1:] {
			if m == "crash" {
				b.crash = true
				continue
			}
			vn, sn, ok := strings.Cut(m, ":")
			if !ok {
				return "", fmt.Errorf("want victim:step, got %q", m)
			}
			if _, err := s.victim(vn); err != nil {
				return "", err
			}
			if _, err := parseStep(sn); err != nil {
				return "", err
			}
			b.members[vn+" "+sn] = true
		}
		s.barriers = append(s.barriers, b)
		return "", nil
	case "run":
		limit := time.Duration(0)
		if len(f) == 4 && f[2] == "for" {
			d, err := time.ParseDuration(f[3])
			if err != nil {
				return "", err
			}
			limit = d
		}
		if err := s.run(f[1], limit); err != nil {
			return "", err
		}
		return outcome(s.runErrs[f[1]]), nil
	case "events":
		return strings.Join(s.eventsOf(f[1]), " "), nil
	case "count":
		c := 0
		for _, e := range s.eventsOf(f[1]) {
			if e == f[2] {
				c++
			}
		}
		if len(f) == 4 {
			v, ok := strings.CutPrefix(f[3], "at-least=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil {
				return "", fmt.Errorf("want at-least=N, got %q", f[3])
			}
			if c >= n {
				return fmt.Sprintf("at least %d", n), nil
			}
		}
		return strconv.Itoa(c), nil
	case "record":
		return s.recordFields(f[1], f[2:])
	case "history":
		rec, err := s.record(f[1])
		if err != nil {
			return "", err
		}
		var got []string
		for _, h := range rec.History {
			got = append(got, h.Step.String()+"="+h.Coordinator)
		}
		return strings.Join(got, " "), nil
	case "fence":
		v, err := s.victim(f[1])
		if err != nil {
			return "", err
		}
		fr, ok := s.mem.Fences()[v.String()]
		revoked := slices.Contains(s.mem.Revoked(), v.LeaseID)
		switch {
		case ok && fr.Victim != v:
			return fmt.Sprintf("fence record names %v", fr.Victim), nil
		case ok && revoked:
			return "yes", nil
		case !ok && !revoked:
			return "no", nil
		default:
			return fmt.Sprintf("fence record %v, lease revoked %v", ok, revoked), nil
		}
	}
	return "", fmt.Errorf("unknown command %q", f[0])
}

// outcome names how a coordinator's run ended.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, recovery.ErrDeposed):
		return "deposed"
	case errors.Is(err, recovery.ErrSelfFenced) && errors.Is(err, fencing.ErrFenced):
		return "self-fenced"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "failed: " + err.Error()
}

func (s *scenario) eventsOf(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events[name]...)
}

func (s *scenario) record(name string) (recovery.Record, error) {
	v, err := s.victim(name)
	if err != nil {
		return recovery.Record{}, err
	}
	rec, ok, err := s.mem.As("").Load(context.Background(), v)
	if err != nil || !ok {
		return rec, fmt.Errorf("no record for %s (%v)", name, err)
	}
	return rec, nil
}

func (s *scenario) recordFields(name string, fields []string) (string, error) {
	rec, err := s.record(name)
	if err != nil {
		return "", err
	}
	var out []string
	for _, f := range fields {
		switch {
		case f == "finished":
			out = append(out, "finished="+rec.Finished.String())
		case f == "attempts":
			out = append(out, fmt.Sprintf("attempts=%d", rec.Attempts))
		case f == "coordinator":
			out = append(out, "coordinator="+rec.Coordinator)
		case f == "error":
			out = append(out, fmt.Sprintf("error=%q", rec.LastError))
		case strings.HasPrefix(f, "attempts>="):
			n, err := strconv.Atoi(f[len("attempts>="):])
			if err != nil {
				return "", fmt.Errorf("bad field %q", f)
			}
			if rec.Attempts >= n {
				out = append(out, f)
			} else {
				out = append(out, fmt.Sprintf("attempts=%d", rec.Attempts))
			}
		case strings.HasPrefix(f, "error~"):
			if strings.Contains(rec.LastError, f[len("error~"):]) {
				out = append(out, f)
			} else {
				out = append(out, fmt.Sprintf("error=%q", rec.LastError))
			}
		default:
			return "", fmt.Errorf("unknown record field %q", f)
		}
	}
	return strings.Join(out, " "), nil
}

// effect logs step of victim and decides whether it fails.
// waitingOnClock is how many timers must be pending before the clock may
// move: one per victim not yet finished and not held at a barrier.
func (s *scenario) waitingOnClock(dones []<-chan struct{}) int {
	n := 0
	for _, d := range dones {
		select {
		case <-d:
		default:
			n++
		}
	}
	s.mu.Lock()
	n -= s.atBarrier
	s.mu.Unlock()
	return max(n, 0)
}

func (s *scenario) effect(ctx context.Context, st recovery.Step, v fencing.NodeRef) error {
	k := v.Name + " " + st.String()
	for _, b := range s.barriers {
		if !b.members[k] {
			continue
		}
		s.mu.Lock()
		if !b.arrived[k] {
			b.arrived[k] = true
			if len(b.arrived) == len(b.members) {
				if b.crash {
					s.cancelRun()
				}
				close(b.all)
			}
		}
		s.atBarrier++
		s.mu.Unlock()
		var err error
		select {
		case <-b.all:
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			// Real time: the others never arrived, so the victims are
			// not being recovered in parallel.
			err = errors.New("other victims never reached this step")
		}
		s.mu.Lock()
		s.atBarrier--
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := st.String()
	if st == recovery.StepFence && s.selfFenced[v.Name] {
		s.events[v.Name] = append(s.events[v.Name], name+"!")
		return fmt.Errorf("leg0: %w", fencing.ErrFenced)
	}
	if n := s.fails[k]; n != 0 {
		if n > 0 {
			s.fails[k] = n - 1
		}
		s.events[v.Name] = append(s.events[v.Name], name+"!")
		return fmt.Errorf("%s of %s: injected failure", name, v)
	}
	s.events[v.Name] = append(s.events[v.Name], name)
	if s.deposeAfter[k] {
		delete(s.deposeAfter, k)
		s.mem.Elect("")
	}
	return nil
}

func (s *scenario) afterSave(by string, rec recovery.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := rec.Victim.Name + " " + rec.Finished.String()
	if s.crashAfter[k] && rec.Attempts == 0 {
		delete(s.crashAfter, k)
		s.cancelRun()
	}
}

// loggingStore records lease revocation as the effect of record-fence.
type loggingStore struct {
	recovery.Store
	s *scenario
}

func (l loggingStore) RevokeLease(ctx context.Context, id int64) error {
	for _, v := range l.s.victims {
		if v.LeaseID == id {
			if err := l.s.effect(ctx, recovery.StepRecordFence, v); err != nil {
				return err
			}
		}
	}
	return l.Store.RevokeLease(ctx, id)
}

type scenarioHooks struct{ s *scenario }

func (h scenarioHooks) ReplayJournal(ctx context.Context, v fencing.NodeRef) error {
	return h.s.effect(ctx, recovery.StepReplayJournal, v)
}
func (h scenarioHooks) ResyncBitmap(ctx context.Context, v fencing.NodeRef) error {
	return h.s.effect(ctx, recovery.StepResync, v)
}
func (h scenarioHooks) ReleaseLocks(ctx context.Context, v fencing.NodeRef) error {
	return h.s.effect(ctx, recovery.StepReleaseLocks, v)
}

func (s *scenario) run(coord string, limit time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.mu.Lock()
	s.cancelRun = cancel
	s.mu.Unlock()
	s.mem.Elect(coord)
	cfg := recovery.DefaultConfig()
	cfg.Name = coord
	cfg.Store = loggingStore{Store: s.mem.As(coord), s: s}
	cfg.Fencer = fencing.FencerFunc(func(ctx context.Context, v fencing.NodeRef) error {
		return s.effect(ctx, recovery.StepFence, v)
	})
	cfg.Hooks = scenarioHooks{s}
	cfg.Clock = s.clk
	// No step reports: their timer would count as a victim waiting on
	// the clock while its step still runs (wait_test.go covers them).
	cfg.StepReportAfter = 0
	cfg.Logger = testlog.New(s.t, coord)
	e, err := recovery.NewEngine(cfg)
	if err != nil {
		return err
	}
	var dones []<-chan struct{}
	for _, v := range s.victims {
		dones = append(dones, e.Start(ctx, v))
	}
	all := make(chan struct{})
	go func() {
		for _, d := range dones {
			<-d
		}
		close(all)
	}()
	start := s.clk.Now()
	// Real time bounds the whole run; waiting on the fake clock ends as
	// soon as the recoveries do.
	waitCtx, waitCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer waitCancel()
	go func() {
		select {
		case <-all:
			waitCancel()
		case <-waitCtx.Done():
		}
	}()
	// The clock moves only while every victim still being recovered
	// waits on it (a back-off), so each retry counts from the moment the
	// engine went to sleep, however slowly the goroutines are scheduled.
	// Victims held at a barrier wait for each other in real time.
loop:
	for {
		select {
		case <-all:
			break loop
		default:
		}
		if limit > 0 && s.clk.Since(start) >= limit {
			cancel()
			<-all
			break
		}
		if waitCtx.Err() != nil {
			select {
			case <-all:
				break loop
			default:
			}
			cancel()
			<-all
			return errors.New("recoveries did not end")
		}
		want := s.waitingOnClock(dones)
		if want == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		pollCtx, pollCancel := context.WithTimeout(waitCtx, 20*time.Millisecond)
		err := s.clk.BlockUntilContext(pollCtx, want)
		pollCancel()
		if err != nil {
			continue // a victim finished or reached a barrier meanwhile: count again
		}
		s.clk.Advance(50 * time.Millisecond)
	}
	var errs []error
	for _, v := range s.victims {
		_, err, _ := e.Result(v)
		errs = append(errs, err)
	}
	s.runErrs[coord] = errors.Join(errs...)
	return nil
}
