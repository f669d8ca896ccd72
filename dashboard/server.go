package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
)

//go:embed assets
var assets embed.FS

// Config configures a Server.
type Config struct {
	// Source is the node the dashboard shows. Required.
	Source Source
	// Interval is how often the Source is read and a snapshot sent, at
	// least 100 ms. Default 1 s.
	Interval time.Duration
	// ReadTimeout bounds one reading of the Source; it must not exceed
	// Interval by much, or snapshots fall behind. Default 2 s.
	ReadTimeout time.Duration
	// Window is the span of the availability plot. Default 1 h.
	Window time.Duration
	// Clock stamps readings and paces them. Nil means real time.
	Clock clock.Clock
	// Logger receives the dashboard's few log lines. Nil discards.
	Logger hclog.Logger
}

// DefaultConfig is a one-second dashboard with an hour of availability;
// the caller sets Source.
func DefaultConfig() Config {
	return Config{Interval: time.Second, ReadTimeout: 2 * time.Second, Window: time.Hour}
}

// Validate says which field is wrong.
func (c Config) Validate() error {
	switch {
	case c.Source == nil:
		return errors.New("dashboard: Config.Source is nil")
	case c.Interval < 100*time.Millisecond:
		return fmt.Errorf("dashboard: Config.Interval %s is below 100ms", c.Interval)
	case c.ReadTimeout <= 0:
		return fmt.Errorf("dashboard: Config.ReadTimeout %s must be positive", c.ReadTimeout)
	case c.Window < availabilityBuckets*c.Interval:
		return fmt.Errorf("dashboard: Config.Window %s must hold %d intervals of %s", c.Window, availabilityBuckets, c.Interval)
	}
	return nil
}

// ErrStopped is returned by Run when called twice; the Server serves its
// last snapshot and ends open streams once Run has returned.
var ErrStopped = errors.New("dashboard: already run")

// Server samples a Source and serves the dashboard: the embedded page
// under /ui/, the event stream at /ui/events and the current snapshot as
// JSON at /ui/snapshot.json. It is an http.Handler for the /ui/ subtree.
type Server struct {
	cfg   Config
	clk   clock.Clock
	log   hclog.Logger
	board *Board
	files http.Handler

	mu      sync.Mutex
	latest  []byte // JSON of the last snapshot; nil before the first
	subs    map[chan []byte]struct{}
	ran     bool
	stopped chan struct{}
	wake    chan struct{}
}

// New checks cfg and returns a Server; Run starts its sampling.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, clk: cfg.Clock, log: cfg.Logger, board: NewBoard(cfg.Window),
		files: http.FileServerFS(sub), subs: map[chan []byte]struct{}{}, stopped: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	if s.clk == nil {
		s.clk = clock.Real()
	}
	if s.log == nil {
		s.log = hclog.NewNullLogger()
	}
	return s, nil
}

// Run reads the Source every Interval until ctx ends, then ends the open
// event streams. It returns within ReadTimeout of ctx's end.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return ErrStopped
	}
	s.ran = true
	s.mu.Unlock()
	defer close(s.stopped)
	t := s.clk.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		s.Sample(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-s.wake:
		}
	}
}

// Wake asks Run for a reading now rather than at the next tick: the node
// calls it when a member comes or goes or a recovery record changes, so
// the page shows each step as it is recorded. It never blocks; wakes that
// come while a reading is pending are merged.
func (s *Server) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Sample takes one reading now and sends its snapshot to every stream.
// Run calls it every Interval; tests may call it directly.
func (s *Server) Sample(ctx context.Context) Snapshot {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout)
	r := Read(rctx, s.cfg.Source, s.clk.Now())
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.board.Observe(r)
	b, err := json.Marshal(snap)
	if err != nil {
		// Every field is a plain value: this cannot fail short of a bug.
		s.log.Error("encoding a snapshot failed", "error", err)
		return snap
	}
	s.latest = b
	for c := range s.subs {
		// A slow browser gets the newest snapshot, not a backlog.
		select {
		case <-c:
		default:
		}
		c <- b
	}
	return snap
}

// ServeHTTP serves the /ui/ subtree.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	// Everything the page uses comes from this node.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	switch r.URL.Path {
	case "/ui":
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	case "/ui/events":
		s.events(w, r)
	case "/ui/snapshot.json":
		s.snapshot(w, r)
	default:
		h.Set("Cache-Control", "no-cache")
		http.StripPrefix("/ui", s.files).ServeHTTP(w, r)
	}
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	b := s.latest
	s.mu.Unlock()
	if b == nil {
		http.Error(w, "no snapshot yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// events streams snapshots as server-sent events until the browser goes
// away or Run ends.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	c := make(chan []byte, 1)
	s.mu.Lock()
	if b := s.latest; b != nil {
		c <- b
	}
	s.subs[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, c)
		s.mu.Unlock()
	}()
	w.WriteHeader(http.StatusOK)
	// retry: a browser reconnects a second after the node comes back.
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopped:
			return
		case b := <-c:
			if _, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}
