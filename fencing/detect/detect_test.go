package detect_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing/detect"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestDetectorSuspectsSilentPeerOnce(t *testing.T) {
	clk := clock.NewFake(epoch)
	d, err := detect.NewDetector(detect.Config{Interval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond, Clock: clk, Logger: testlog.New(t, "det")})
	if err != nil {
		t.Fatal(err)
	}
	a, b := detect.Peer{Name: "a", Incarnation: "1"}, detect.Peer{Name: "b", Incarnation: "1"}
	d.Watch(a)
	d.Watch(b)
	// Both beat for 2 s; a then goes silent.
	for i := 0; i < 20; i++ {
		clk.Advance(100 * time.Millisecond)
		d.Heard(a)
		d.Heard(b)
		if s := d.Check(); len(s) != 0 {
			t.Fatalf("suspected %v while beating", s)
		}
	}
	// Heartbeats from another incarnation of a do not keep it alive.
	var got []detect.Suspicion
	for i := 0; i < 10; i++ {
		clk.Advance(100 * time.Millisecond)
		d.Heard(b)
		d.Heard(detect.Peer{Name: "a", Incarnation: "0"})
		s := d.Check()
		if i < 5 && len(s) != 0 {
			t.Fatalf("suspected after %d ms of silence: %v", (i+1)*100, s)
		}
		got = append(got, s...)
	}
	if len(got) != 1 || got[0].Peer != a || got[0].Silent <= 500*time.Millisecond || got[0].Silent > 600*time.Millisecond {
		t.Fatalf("suspicions %+v, want a once just after 500ms", got)
	}
	// Sticky: a late heartbeat of the suspected incarnation does not clear it.
	if d.Heard(a) || !d.Suspected("a") {
		t.Fatal("suspected incarnation revived by a late heartbeat")
	}
	// A new incarnation (rejoined after fencing) is watched afresh.
	d.Watch(detect.Peer{Name: "a", Incarnation: "2"})
	if d.Suspected("a") {
		t.Fatal("new incarnation inherited the suspicion")
	}
	d.Forget("b")
	// A peer never heard from is not suspected: it may not run its
	// detector yet, and its lease covers it.
	for range 10 {
		clk.Advance(100 * time.Millisecond)
		if s := d.Check(); len(s) != 0 {
			t.Fatalf("a/2, never heard, suspected: %v", s)
		}
	}
	// Once heard, its silence counts.
	d.Heard(detect.Peer{Name: "a", Incarnation: "2"})
	got = nil
	for range 10 {
		clk.Advance(100 * time.Millisecond)
		got = append(got, d.Check()...)
	}
	if len(got) != 1 || got[0].Peer.Incarnation != "2" {
		t.Fatalf("after forgetting b and silence of a/2: %v", got)
	}
}

// TestDetectorDiscountsItsOwnStall: a machine short of CPU stalls every
// process at once; the detector's check then runs late and its peers were
// silent because they stalled too. That silence is not counted: no
// suspicion. A peer that is really gone is suspected a Timeout of running
// checks later all the same.
func TestDetectorDiscountsItsOwnStall(t *testing.T) {
	clk := clock.NewFake(epoch)
	d, err := detect.NewDetector(detect.Config{Interval: 100 * time.Millisecond, Timeout: 400 * time.Millisecond, Clock: clk, Logger: testlog.New(t, "det")})
	if err != nil {
		t.Fatal(err)
	}
	a := detect.Peer{Name: "a", Incarnation: "1"}
	d.Watch(a)
	for range 5 {
		clk.Advance(100 * time.Millisecond)
		d.Heard(a)
		d.Check()
	}
	// Everything stalls for 450 ms, a included.
	clk.Advance(550 * time.Millisecond)
	if s := d.Check(); len(s) != 0 {
		t.Fatalf("suspected across the detector's own stall: %v", s)
	}
	// a beats again: nothing happened.
	clk.Advance(100 * time.Millisecond)
	d.Heard(a)
	if s := d.Check(); len(s) != 0 || d.Suspected("a") {
		t.Fatalf("suspected after the stall: %v", s)
	}
	// a dies; the detector runs on time: suspected once silent past the
	// Timeout, however long the stall before was.
	var got []detect.Suspicion
	silentFor := 0
	for len(got) == 0 && silentFor < 1000 {
		clk.Advance(100 * time.Millisecond)
		silentFor += 100
		got = d.Check()
	}
	if len(got) != 1 || silentFor != 500 {
		t.Fatalf("suspicion %v after %d ms of silence, want one after 500 ms", got, silentFor)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (detect.Config{Interval: 100 * time.Millisecond, Timeout: 200 * time.Millisecond}).Validate(); err == nil {
		t.Fatal("timeout below 3 intervals accepted")
	}
	if err := detect.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestHeartbeatRoundTrip(t *testing.T) {
	h := detect.Heartbeat{From: detect.Peer{Name: "node1", Incarnation: "abc"}, Seq: 42}
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var g detect.Heartbeat
	if err := g.UnmarshalBinary(b); err != nil || g != h {
		t.Fatalf("round trip %+v %v", g, err)
	}
	for _, bad := range [][]byte{nil, []byte("SHB1"), append([]byte("XHB1"), b[4:]...), b[:len(b)-1], append(b, 0)} {
		if err := g.UnmarshalBinary(bad); !errors.Is(err, detect.ErrBadHeartbeat) {
			t.Fatalf("%q decoded: %v", bad, err)
		}
	}
}

func FuzzHeartbeat(f *testing.F) {
	b, _ := detect.Heartbeat{From: detect.Peer{Name: "n", Incarnation: "i"}, Seq: 1}.MarshalBinary()
	f.Add(b)
	f.Add([]byte("SHB1\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var h detect.Heartbeat
		if err := h.UnmarshalBinary(data); err != nil {
			return
		}
		again, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", h, err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("not canonical: %q -> %+v -> %q", data, h, again)
		}
	})
}

// TestUDPDetectsStoppedPeer runs three detectors on loopback; when one
// stops, the other two suspect it, and only it.
func TestUDPDetectsStoppedPeer(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	var mu sync.Mutex
	eps := map[string]detect.Endpoint{}
	suspicions := map[string][]detect.Suspicion{}
	var dets []*detect.UDP
	for _, n := range names {
		cfg := detect.UDPConfig{
			Self:     detect.Peer{Name: n, Incarnation: "1"},
			Listen:   "127.0.0.1:0",
			Detector: detect.Config{Interval: 20 * time.Millisecond, Timeout: 400 * time.Millisecond, Logger: testlog.New(t, n)},
			Peers: func() map[string]detect.Endpoint {
				mu.Lock()
				defer mu.Unlock()
				out := map[string]detect.Endpoint{}
				for k, v := range eps {
					out[k] = v
				}
				return out
			},
			OnSuspect: func(s detect.Suspicion) {
				mu.Lock()
				defer mu.Unlock()
				suspicions[n] = append(suspicions[n], s)
			},
		}
		u, err := detect.NewUDP(cfg)
		if err != nil {
			t.Fatal(err)
		}
		dets = append(dets, u)
		eps[n] = detect.Endpoint{Incarnation: "1", Addr: u.Addr()}
	}
	ctxs := make([]context.CancelFunc, len(dets))
	var wg sync.WaitGroup
	for i, u := range dets {
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i] = cancel
		wg.Go(func() { u.Run(ctx) })
	}
	defer func() {
		for _, c := range ctxs {
			c()
		}
		wg.Wait()
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		testutil.WaitFor(t, 20*time.Second, what, cond)
	}
	waitFor("everyone heard everyone", func() bool {
		for i, u := range dets {
			for j, n := range names {
				if i != j && u.Detector().HeardCount(n) < 3 {
					return false
				}
			}
		}
		return true
	})
	// Garbage on the heartbeat port is dropped, not trusted.
	c, err := net.Dial("udp", dets[0].Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("SHB1garbage"))
	c.Close()
	waitFor("garbage counted", func() bool { return dets[0].Malformed() == 1 })

	stopped := time.Now()
	ctxs[2]()
	waitFor("n3 suspected by n1 and n2", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(suspicions["n1"]) > 0 && len(suspicions["n2"]) > 0
	})
	t.Logf("n3 suspected %v after it stopped", time.Since(stopped))
	mu.Lock()
	defer mu.Unlock()
	for _, n := range []string{"n1", "n2"} {
		if len(suspicions[n]) != 1 || suspicions[n][0].Peer.Name != "n3" {
			t.Fatalf("%s suspected %+v, want only n3", n, suspicions[n])
		}
	}
}

// TestUDPHandedOverSocketOutlivesARun: a socket bound once by the caller
// serves one detector run after another (a node's incarnations keep their
// heartbeat port), and is still open after each run ends.
func TestUDPHandedOverSocketOutlivesARun(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	for inc := range 2 {
		self := detect.Peer{Name: "n1", Incarnation: fmt.Sprint(inc)}
		u, err := detect.NewUDP(detect.UDPConfig{
			Self: self, Conn: conn,
			Detector: detect.Config{Interval: 20 * time.Millisecond, Timeout: 400 * time.Millisecond, Logger: testlog.New(t, "n1")},
			Peers: func() map[string]detect.Endpoint {
				return map[string]detect.Endpoint{"n2": {Incarnation: "1", Addr: peer.LocalAddr().String()}}
			},
			OnSuspect: func(detect.Suspicion) {},
		})
		if err != nil {
			t.Fatal(err)
		}
		if u.Addr() != conn.LocalAddr().String() {
			t.Fatalf("detector listens on %s, not on the handed-over %s", u.Addr(), conn.LocalAddr())
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- u.Run(ctx) }()
		hb, _ := detect.Heartbeat{From: detect.Peer{Name: "n2", Incarnation: "1"}, Seq: 1}.MarshalBinary()
		testutil.WaitFor(t, 10*time.Second, "n1 hears n2", func() bool {
			peer.WriteToUDP(hb, conn.LocalAddr().(*net.UDPAddr))
			return u.Detector().HeardCount("n2") > 0
		})
		// Heartbeats of the earlier run may still be queued: read until
		// one of this run arrives.
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, detect.MaxHeartbeat)
		for {
			n, _, err := peer.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("run %d: no heartbeat of its own: %v", inc, err)
			}
			var h detect.Heartbeat
			if h.UnmarshalBinary(buf[:n]) == nil && h.From == self {
				break
			}
		}
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d did not return after its context ended", inc)
		}
	}
	if _, err := conn.WriteToUDP([]byte("x"), peer.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatalf("the handed-over socket was closed by a run: %v", err)
	}
}
