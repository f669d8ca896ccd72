package detect

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Config configures a Detector.
type Config struct {
	// Interval is how often heartbeats are sent. Default 100ms.
	Interval time.Duration
	// Timeout is how long a peer may stay silent before it is suspected.
	// It must be at least 3 Intervals, so that one or two lost datagrams
	// do not get a live node fenced. Default 500ms.
	Timeout time.Duration
	// Clock measures silence. Nil means real time.
	Clock clock.Clock
	// Logger receives suspicions. Nil discards.
	Logger hclog.Logger
}

// DefaultConfig is a 100ms heartbeat with a 500ms timeout.
func DefaultConfig() Config {
	return Config{Interval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond}
}

// Validate says which field is wrong.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("detect: Config.Interval %v must be positive", c.Interval)
	case c.Timeout < 3*c.Interval:
		return fmt.Errorf("detect: Config.Timeout %v must be at least 3x Interval (%v)", c.Timeout, c.Interval)
	}
	return nil
}

// Peer is one incarnation of a node.
type Peer struct {
	Name        string
	Incarnation string
}

func (p Peer) String() string { return p.Name + "/" + p.Incarnation }

// Suspicion reports a peer that went silent.
type Suspicion struct {
	Peer Peer
	// LastHeard is the last heartbeat (or the start of watching, if none
	// came).
	LastHeard time.Time
	// Silent is how long it had been silent when suspected.
	Silent time.Duration
}

type peerState struct {
	inc       string
	lastHeard time.Time
	heard     int
	suspected bool
	reported  bool
}

// Detector tracks when each watched peer was last heard from. It is safe
// for concurrent use and does no I/O: feed it with Heard and poll Check.
type Detector struct {
	cfg Config
	clk clock.Clock
	log hclog.Logger

	mu    sync.Mutex
	peers map[string]*peerState
	// lastCheck is when Check last ran; zero before the first.
	lastCheck time.Time
}

// NewDetector checks cfg and returns an empty detector.
func NewDetector(cfg Config) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, peers: map[string]*peerState{}}
	if d.clk == nil {
		d.clk = clock.Real()
	}
	if d.log == nil {
		d.log = hclog.NewNullLogger()
	}
	return d, nil
}

// Watch starts watching p, the incarnation membership says is current.
// Watching a new incarnation of a node replaces the old one and clears
// its suspicion; the new one gets a full Timeout of grace.
func (d *Detector) Watch(p Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.peers[p.Name]; ok && st.inc == p.Incarnation {
		return
	}
	d.peers[p.Name] = &peerState{inc: p.Incarnation, lastHeard: d.clk.Now()}
}

// Forget stops watching the node name (it left the cluster).
func (d *Detector) Forget(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.peers, name)
}

// Watched lists the watched peers, sorted by name.
func (d *Detector) Watched() []Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Peer, 0, len(d.peers))
	for n, st := range d.peers {
		out = append(out, Peer{Name: n, Incarnation: st.inc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Heard records a heartbeat from p. Heartbeats of an incarnation that is
// not the watched one are ignored, and so are those of a suspected
// incarnation: once suspected, it is fenced and must come back as a new
// incarnation. It reports whether the heartbeat counted.
func (d *Detector) Heard(p Peer) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.peers[p.Name]
	if !ok || st.inc != p.Incarnation || st.suspected {
		return false
	}
	st.lastHeard = d.clk.Now()
	st.heard++
	return true
}

// HeardCount is how many heartbeats of the watched incarnation of name
// counted so far.
func (d *Detector) HeardCount(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.peers[name]; ok {
		return st.heard
	}
	return 0
}

// Check returns the peers newly suspected since the last Check: those
// silent for longer than Timeout after they were heard at least once. A
// peer never heard from is not suspected: a node that just registered may
// not run its detector yet (it starts once its volume is open), and its
// lease covers it meanwhile. Each suspicion is reported once.
//
// Check is meant to run every Interval. When it runs more than two
// Intervals after the last one, this process was not running (a machine
// short of CPU stalls every process at once, for hundreds of
// milliseconds): heartbeats may wait unread in the socket, and the peers
// did not send any while they stalled too. Silence measured across the
// detector's own stall is not evidence, so the stall (the gap less one
// Interval) is not counted: it only delays a suspicion, and a peer that
// is really gone is still suspected a Timeout of running time later.
func (d *Detector) Check() []Suspicion {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clk.Now()
	if !d.lastCheck.IsZero() {
		if gap := now.Sub(d.lastCheck); gap > 2*d.cfg.Interval {
			stall := gap - d.cfg.Interval
			for _, st := range d.peers {
				if t := st.lastHeard.Add(stall); !st.suspected {
					st.lastHeard = t
					if t.After(now) {
						st.lastHeard = now
					}
				}
			}
			// Debug: on a machine short of CPU this is every check.
			d.log.Debug("detector ran late: silence during its own stall not counted", "stall", stall, "interval", d.cfg.Interval)
		}
	}
	d.lastCheck = now
	var out []Suspicion
	for n, st := range d.peers {
		if st.heard == 0 {
			continue
		}
		silent := now.Sub(st.lastHeard)
		if !st.suspected && silent > d.cfg.Timeout {
			st.suspected = true
		}
		if st.suspected && !st.reported {
			st.reported = true
			s := Suspicion{Peer: Peer{Name: n, Incarnation: st.inc}, LastHeard: st.lastHeard, Silent: silent}
			d.log.Warn("peer suspected", "peer", s.Peer.String(), "silent", silent, "timeout", d.cfg.Timeout)
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer.Name < out[j].Peer.Name })
	return out
}

// Suspected reports whether name's watched incarnation is suspected.
func (d *Detector) Suspected(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.peers[name]
	return ok && st.suspected
}
