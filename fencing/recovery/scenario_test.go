package recovery_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// TestScenarios runs the recovery-order scripts in testdata. Each line is
// a command; see scenario.exec for the language.
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
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &scenario{
		t: t, clk: clock.NewFake(epoch), mem: recovery.NewMemStore(),
		events: map[string][]string{}, fails: map[string]int{}, selfFenced: map[string]bool{},
		crashAfter: map[string]bool{}, deposeAfter: map[string]bool{},
		runErrs: map[string]error{},
	}
	s.mem.AfterSave(s.afterSave)
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if err := s.exec(strings.Fields(text)); err != nil {
			t.Fatalf("%s:%d: %s: %v", path, line, text, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
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

// exec runs one command:
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
//	run C [for DURATION]          elect C and run its recoveries until they end or DURATION of fake time
//	expect V EVENT...             the effects seen for V, in order ("step!" is a failed attempt)
//	expect-count V EVENT OP N     how many times EVENT happened (OP is = or >=)
//	expect-record V key=value...  finished, attempts (OP allowed: attempts>=N), coordinator, error (substring)
//	expect-history V STEP=C...    finished steps and who finished them, in order
//	expect-fence V yes|no         whether the fence record exists
//	expect-run C ok|deposed|self-fenced|cancelled
func (s *scenario) exec(f []string) error {
	switch f[0] {
	case "victims":
		for i, n := range f[1:] {
			s.victims = append(s.victims, fencing.NewNodeRef(n, "1", int64(100+i)))
		}
		return nil
	case "fail", "fail-forever", "crash-after", "depose-after-effect":
		if len(f) < 3 {
			return errors.New("want victim and step")
		}
		if _, err := s.victim(f[1]); err != nil {
			return err
		}
		if _, err := parseStep(f[2]); err != nil {
			return err
		}
		k := f[1] + " " + f[2]
		switch f[0] {
		case "fail":
			n, err := strconv.Atoi(f[3])
			if err != nil {
				return err
			}
			s.fails[k] = n
		case "fail-forever":
			s.fails[k] = -1
		case "crash-after":
			s.crashAfter[k] = true
		case "depose-after-effect":
			s.deposeAfter[k] = true
		}
		return nil
	case "self-fenced":
		s.selfFenced[f[1]] = true
		return nil
	case "parallel":
		st, err := parseStep(f[1])
		if err != nil {
			return err
		}
		b := &barrier{members: map[string]bool{}, arrived: map[string]bool{}, all: make(chan struct{})}
		for _, v := range s.victims {
			b.members[v.Name+" "+st.String()] = true
		}
		s.barriers = append(s.barriers, b)
		return nil
	case "meet":
		b := &barrier{members: map[string]bool{}, arrived: map[string]bool{}, all: make(chan struct{})}
		for _, m := range f[1:] {
			if m == "crash" {
				b.crash = true
				continue
			}
			vn, sn, ok := strings.Cut(m, ":")
			if !ok {
				return fmt.Errorf("want victim:step, got %q", m)
			}
			if _, err := s.victim(vn); err != nil {
				return err
			}
			if _, err := parseStep(sn); err != nil {
				return err
			}
			b.members[vn+" "+sn] = true
		}
		s.barriers = append(s.barriers, b)
		return nil
	case "run":
		limit := time.Duration(0)
		if len(f) == 4 && f[2] == "for" {
			d, err := time.ParseDuration(f[3])
			if err != nil {
				return err
			}
			limit = d
		}
		return s.run(f[1], limit)
	case "expect":
		got := s.eventsOf(f[1])
		if !slices.Equal(got, f[2:]) {
			return fmt.Errorf("events of %s:\n got  %v\n want %v", f[1], got, f[2:])
		}
		return nil
	case "expect-count":
		n, err := strconv.Atoi(f[4])
		if err != nil {
			return err
		}
		c := 0
		for _, e := range s.eventsOf(f[1]) {
			if e == f[2] {
				c++
			}
		}
		if (f[3] == "=" && c != n) || (f[3] == ">=" && c < n) {
			return fmt.Errorf("%s of %s happened %d times, want %s %d (events %v)", f[2], f[1], c, f[3], n, s.eventsOf(f[1]))
		}
		return nil
	case "expect-record":
		return s.expectRecord(f[1], f[2:])
	case "expect-history":
		rec, err := s.record(f[1])
		if err != nil {
			return err
		}
		var got []string
		for _, h := range rec.History {
			got = append(got, h.Step.String()+"="+h.Coordinator)
		}
		if !slices.Equal(got, f[2:]) {
			return fmt.Errorf("history of %s:\n got  %v\n want %v", f[1], got, f[2:])
		}
		return nil
	case "expect-fence":
		v, err := s.victim(f[1])
		if err != nil {
			return err
		}
		fr, ok := s.mem.Fences()[v.String()]
		revoked := slices.Contains(s.mem.Revoked(), v.LeaseID)
		want := f[2] == "yes"
		if ok != want || revoked != want {
			return fmt.Errorf("fence record %v, lease revoked %v; want %v", ok, revoked, want)
		}
		if ok && fr.Victim != v {
			return fmt.Errorf("fence record names %v", fr.Victim)
		}
		return nil
	case "expect-run":
		err := s.runErrs[f[1]]
		var ok bool
		switch f[2] {
		case "ok":
			ok = err == nil
		case "deposed":
			ok = errors.Is(err, recovery.ErrDeposed)
		case "self-fenced":
			ok = errors.Is(err, recovery.ErrSelfFenced) && errors.Is(err, fencing.ErrFenced)
		case "cancelled":
			ok = errors.Is(err, context.Canceled)
		default:
			return fmt.Errorf("unknown outcome %q", f[2])
		}
		if !ok {
			return fmt.Errorf("run of %s ended with %v, want %s", f[1], err, f[2])
		}
		return nil
	}
	return fmt.Errorf("unknown command %q", f[0])
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

func (s *scenario) expectRecord(name string, kvs []string) error {
	rec, err := s.record(name)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		switch {
		case strings.HasPrefix(kv, "finished="):
			if got := rec.Finished.String(); got != kv[len("finished="):] {
				return fmt.Errorf("finished = %s, want %s", got, kv)
			}
		case strings.HasPrefix(kv, "attempts>="):
			n, _ := strconv.Atoi(kv[len("attempts>="):])
			if rec.Attempts < n {
				return fmt.Errorf("attempts = %d, want %s", rec.Attempts, kv)
			}
		case strings.HasPrefix(kv, "attempts="):
			n, _ := strconv.Atoi(kv[len("attempts="):])
			if rec.Attempts != n {
				return fmt.Errorf("attempts = %d, want %s", rec.Attempts, kv)
			}
		case strings.HasPrefix(kv, "coordinator="):
			if rec.Coordinator != kv[len("coordinator="):] {
				return fmt.Errorf("coordinator = %s, want %s", rec.Coordinator, kv)
			}
		case strings.HasPrefix(kv, "error="):
			if !strings.Contains(rec.LastError, kv[len("error="):]) {
				return fmt.Errorf("last error %q, want it to contain %q", rec.LastError, kv[len("error="):])
			}
		default:
			return fmt.Errorf("unknown record field %q", kv)
		}
	}
	return nil
}

// effect logs step of victim and decides whether it fails.
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
		s.mu.Unlock()
		select {
		case <-b.all:
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			// Real time: the others never arrived, so the victims are
			// not being recovered in parallel.
			return errors.New("other victims never reached this step")
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
	realDeadline := time.Now().Add(30 * time.Second)
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
		if time.Now().After(realDeadline) {
			cancel()
			<-all
			return errors.New("recoveries did not end")
		}
		if s.clk.Pending() > 0 {
			s.clk.Advance(50 * time.Millisecond)
		} else {
			time.Sleep(200 * time.Microsecond)
		}
	}
	var errs []error
	for _, v := range s.victims {
		_, err, _ := e.Result(v)
		errs = append(errs, err)
	}
	s.runErrs[coord] = errors.Join(errs...)
	return nil
}
