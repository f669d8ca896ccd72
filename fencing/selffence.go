package fencing

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
)

// SelfFenceConfig configures a SelfFence.
type SelfFenceConfig struct {
	// Deadline is the incarnation's self-fence deadline on its own clock
	// (dlm.Member.Deadline): the last moment it may trust its lease. It
	// moves forward with every renewal. Required.
	Deadline func() time.Time
	// Lost, when set, is closed when the incarnation lost its lease for
	// another reason (dlm.Member.Lost); it triggers the fence at once.
	Lost <-chan struct{}
	// StopIO stops all volume I/O at once: outstanding writes fail and are
	// not retried, new ones are refused. It is called once, must not wait
	// for I/O to drain, and should return quickly. Required.
	StopIO func(reason string)
	// Watchdog is the path of a watchdog device (/dev/watchdog) to pet
	// while the deadline holds; empty means none. If the path does not
	// exist the watchdog is skipped with a warning.
	Watchdog string
	// PetInterval is how often the watchdog is petted. It must be well
	// under the device's timeout. Default 1s.
	PetInterval time.Duration
	// Clock reads the deadline's clock. Nil means real time.
	Clock clock.Clock
	// Logger receives the self-fence line. Nil discards.
	Logger hclog.Logger
}

// Validate says which field is wrong.
func (c SelfFenceConfig) Validate() error {
	switch {
	case c.Deadline == nil:
		return fmt.Errorf("fencing: SelfFenceConfig.Deadline is nil")
	case c.StopIO == nil:
		return fmt.Errorf("fencing: SelfFenceConfig.StopIO is nil")
	case c.PetInterval < 0:
		return fmt.Errorf("fencing: SelfFenceConfig.PetInterval %v is negative", c.PetInterval)
	}
	return nil
}

// SelfFence makes a node cut itself off when it cannot renew its lease in
// time: at the deadline it calls StopIO, before the others may consider
// the lease expired and recover the node. After that the incarnation is
// finished; the daemon exits or restarts as a new incarnation.
//
// With a watchdog device it also pets the device while the deadline
// holds and stops petting once it passed, so that a node too stuck to
// stop its I/O is reset by the watchdog.
type SelfFence struct {
	cfg  SelfFenceConfig
	clk  clock.Clock
	log  hclog.Logger
	open func(path string) (io.WriteCloser, error)

	once    sync.Once
	fenced  chan struct{}
	mu      sync.Mutex
	reason  string
	pets    int
	watchOn bool
}

// NewSelfFence checks cfg and returns the self-fence; Run starts it.
func NewSelfFence(cfg SelfFenceConfig) (*SelfFence, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PetInterval == 0 {
		cfg.PetInterval = time.Second
	}
	s := &SelfFence{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, fenced: make(chan struct{}), open: openWatchdog}
	if s.clk == nil {
		s.clk = clock.Real()
	}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	return s, nil
}

func openWatchdog(path string) (io.WriteCloser, error) {
	return os.OpenFile(path, os.O_WRONLY, 0)
}

// Fenced is closed once StopIO was called.
func (s *SelfFence) Fenced() <-chan struct{} { return s.fenced }

// Reason says why the node fenced itself; empty before.
func (s *SelfFence) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Pets counts the watchdog pets so far.
func (s *SelfFence) Pets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pets
}

// Trigger fences the node now, for a reason found elsewhere (for example a
// write answered with a reservation conflict). Only the first call counts.
func (s *SelfFence) Trigger(reason string) {
	s.once.Do(func() {
		s.mu.Lock()
		s.reason = reason
		s.mu.Unlock()
		s.log.Error("self-fencing: stopping all volume I/O", "reason", reason)
		s.cfg.StopIO(reason)
		close(s.fenced)
	})
}

// Run watches the deadline until ctx ends or the node fenced itself. A
// clean stop (ctx ended, not fenced) disarms the watchdog; after a
// self-fence the watchdog is closed armed, so the machine is reset unless
// a new incarnation opens and pets it within the device's timeout.
func (s *SelfFence) Run(ctx context.Context) error {
	var wd io.WriteCloser
	if s.cfg.Watchdog != "" {
		if _, err := os.Stat(s.cfg.Watchdog); err != nil {
			s.log.Warn("watchdog device not present, running without it", "path", s.cfg.Watchdog, "error", err)
		} else if w, err := s.open(s.cfg.Watchdog); err != nil {
			s.log.Warn("cannot open watchdog device, running without it", "path", s.cfg.Watchdog, "error", err)
		} else {
			wd = w
			s.mu.Lock()
			s.watchOn = true
			s.mu.Unlock()
			s.log.Info("watchdog armed", "path", s.cfg.Watchdog, "pet_interval", s.cfg.PetInterval)
		}
	}
	defer func() {
		if wd == nil {
			return
		}
		select {
		case <-s.fenced:
			// Left armed on purpose.
		default:
			// Magic close: 'V' before close disarms the watchdog.
			if _, err := wd.Write([]byte("V")); err != nil {
				s.log.Warn("disarming watchdog", "error", err)
			}
		}
		wd.Close()
	}()

	timer := s.clk.NewTimer(s.untilDeadline())
	defer timer.Stop()
	var pet <-chan time.Time
	if wd != nil {
		t := s.clk.NewTicker(s.cfg.PetInterval)
		defer t.Stop()
		pet = t.C()
		s.petOnce(wd)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.fenced:
			return nil
		case <-s.cfg.Lost:
			s.Trigger("lease lost")
			return nil
		case <-timer.C():
			if d := s.untilDeadline(); d > 0 {
				timer.Reset(d) // renewed since the timer was set
				continue
			}
			s.Trigger(fmt.Sprintf("self-fence deadline %s passed without renewal", s.cfg.Deadline().Format(time.RFC3339Nano)))
			return nil
		case <-pet:
			// Only pet while the deadline holds: a node whose deadline
			// passed but whose timer did not fire (stuck) gets reset.
			if s.untilDeadline() > 0 {
				s.petOnce(wd)
			}
		}
	}
}

// untilDeadline reads the clock before the deadline: a renewal that lands
// in between then counts, instead of a stale deadline making the node
// fence itself needlessly.
func (s *SelfFence) untilDeadline() time.Duration {
	now := s.clk.Now()
	return s.cfg.Deadline().Sub(now)
}

func (s *SelfFence) petOnce(wd io.Writer) {
	if _, err := wd.Write([]byte{0}); err != nil {
		s.log.Warn("petting watchdog", "error", err)
		return
	}
	s.mu.Lock()
	s.pets++
	s.mu.Unlock()
}
