package iscsi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// cutter hands out connections and can drop the newest one, as a network
// fault would.
type cutter struct {
	mu   sync.Mutex
	last net.Conn
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err == nil {
		c.mu.Lock()
		c.last = nc
		c.mu.Unlock()
	}
	return nc, err
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil {
		_ = c.last.Close()
	}
}

// block is what a 512-byte block of the model may hold: after a write
// whose outcome is unknown, either the old or the new contents.
type block struct {
	maybe [][]byte
}

// TestCutMidIO drops the TCP connection repeatedly while writers and
// readers are busy. Every write reported done must be on the LUN; a write
// reported as unknown may have landed or not; nothing else may fail.
func TestCutMidIO(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":cut")
	const size = 16 << 20
	tgt.MustAddLUN(t, 1, size)
	cfg := testConfig(t, tgt, 1)
	cut := &cutter{}
	cfg.Dial = cut.dial
	cfg.ReconnectAttempts = 20
	cfg.ReconnectDelay = 20 * time.Millisecond
	cfg.MaxTransfer = 128 << 10
	d := openDevice(t, cfg)
	ctx := testCtx(t)

	const workers = 8
	const region = size / workers
	m := newLUNModel(workers, region)
	var readsOK int
	var statMu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			base := int64(w) * region
			for i := 0; i < 100_000; i++ { // until stop; the count only bounds the loop
				select {
				case <-stop:
					return
				default:
				}
				blocks := 1 + rng.IntN(512)
				first := rng.IntN(region/512 - blocks)
				off := base + int64(first)*512
				if rng.IntN(3) == 0 {
					got := make([]byte, blocks*512)
					if err := d.ReadAt(ctx, got, off); err != nil {
						errs <- fmt.Errorf("read at %d: %w", off, err)
						return
					}
					if err := check(m.regions[w][first:first+blocks], got); err != nil {
						errs <- fmt.Errorf("read at %d: %w", off, err)
						return
					}
					statMu.Lock()
					readsOK++
					statMu.Unlock()
					continue
				}
				if err := m.write(ctx, d, rng, w, first, blocks, off); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	// Cut ten times, at random moments while the workers run, then let
	// them finish what they are doing and stop.
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 0; i < 10; i++ {
		time.Sleep(time.Duration(30+rng.IntN(120)) * time.Millisecond)
		cut.cut()
	}
	// Writes go through again after the last cut before the workers stop
	// (or a worker has failed: its error is reported below).
	after := m.doneWrites()
	testutil.WaitFor(t, 30*time.Second, "writes done after the last cut", func() bool { return m.doneWrites() >= after+workers || len(errs) > 0 })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	// Final check of every region.
	for w := 0; w < workers; w++ {
		got := make([]byte, region)
		if err := d.ReadAt(ctx, got, int64(w)*region); err != nil {
			t.Fatal(err)
		}
		if err := check(m.regions[w], got); err != nil {
			t.Fatalf("region %d: %v", w, err)
		}
	}
	st := d.Session().Stats()
	t.Logf("writes done %d, outcome unknown %d, reads checked %d, logins %d", m.done, m.unknown, readsOK, st.Logins)
	if st.Logins < 5 {
		t.Fatalf("only %d logins: the cuts did not hit", st.Logins)
	}
}

// lunModel is what each worker's region of a LUN may hold, and how many
// writes were done or ended with an unknown outcome.
type lunModel struct {
	regions [][]block

	mu            sync.Mutex
	done, unknown int
}

// newLUNModel models workers regions of region bytes, all zero.
func newLUNModel(workers, region int) *lunModel {
	m := &lunModel{regions: make([][]block, workers)}
	for w := range m.regions {
		m.regions[w] = make([]block, region/512)
		for i := range m.regions[w] {
			m.regions[w][i].maybe = [][]byte{make([]byte, 512)}
		}
	}
	return m
}

// write writes random data to blocks blocks of worker w's region from
// block first (at off on d) and records what the blocks may now hold. An
// error other than an unknown outcome is returned.
func (m *lunModel) write(ctx context.Context, d blockdev.Device, rng *rand.Rand, w, first, blocks int, off int64) error {
	buf := randomBytes(rng, blocks*512)
	err := d.WriteAt(ctx, buf, off)
	switch {
	case err == nil:
		for b := 0; b < blocks; b++ {
			m.regions[w][first+b].maybe = [][]byte{buf[b*512 : (b+1)*512]}
		}
		m.mu.Lock()
		m.done++
		m.mu.Unlock()
	case errors.Is(err, blockdev.ErrWriteOutcomeUnknown):
		for b := 0; b < blocks; b++ {
			blk := &m.regions[w][first+b]
			blk.maybe = append(blk.maybe, buf[b*512:(b+1)*512])
		}
		m.mu.Lock()
		m.unknown++
		m.mu.Unlock()
	default:
		return fmt.Errorf("write at %d: %w", off, err)
	}
	return nil
}

// randomBytes returns n bytes from rng, eight per draw (byte by byte,
// the race detector makes filling megabytes take seconds).
func randomBytes(rng *rand.Rand, n int) []byte {
	buf := make([]byte, (n+7)/8*8)
	for j := 0; j < len(buf); j += 8 {
		binary.LittleEndian.PutUint64(buf[j:], rng.Uint64())
	}
	return buf[:n]
}

// doneWrites is how many writes the model has seen reported done.
func (m *lunModel) doneWrites() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

func check(model []block, got []byte) error {
	for i := range model {
		b := got[i*512 : (i+1)*512]
		ok := false
		for _, m := range model[i].maybe {
			if bytes.Equal(m, b) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("block %d holds data no write put there (%d candidates)", i, len(model[i].maybe))
		}
		// What was read is now known.
		model[i].maybe = [][]byte{append([]byte(nil), b...)}
	}
	return nil
}

// dyingConn is a connection that fails its reads once the target has
// answered a SCSI command with GOOD status: the reconnect's TEST UNIT
// READY, its last command before the session publishes the connection,
// so it is lost right after it was published.
type dyingConn struct {
	net.Conn
	mu       sync.Mutex
	answered bool
}

func (c *dyingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	lose := c.answered
	c.mu.Unlock()
	if lose {
		_ = c.Conn.Close()
		return 0, errors.New("connection lost after its first answer")
	}
	n, err := c.Conn.Read(p)
	// A SCSI Response PDU (RFC 7143 11.4) with status GOOD.
	if n >= 48 && p[0]&0x3f == 0x21 && p[3] == 0x00 {
		c.mu.Lock()
		c.answered = true
		c.mu.Unlock()
	}
	return n, err
}

// TestReconnectLostAgainIsRetried: a reconnect logs in, and its
// connection is lost again before the waiting command can use it (as a
// link cut twice in a row does). The command starts another reconnect
// instead of failing with ErrNotConnected, and goes through once a
// connection lasts.
func TestReconnectLostAgainIsRetried(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":again")
	tgt.MustAddLUN(t, 1, 1<<20)
	cfg := testConfig(t, tgt, 1)
	var mu sync.Mutex
	dials, dying := 0, 3
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		dials++
		if dials > 1 && dying > 0 { // the connections of the next reconnects die
			dying--
			return &dyingConn{Conn: nc}, nil
		}
		return nc, nil
	}
	cfg.ReconnectAttempts = 10
	cfg.ReconnectDelay = 10 * time.Millisecond
	d := openDevice(t, cfg)
	ctx := testCtx(t)
	want := bytes.Repeat([]byte{0x5a}, 4096)
	if err := d.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	d.Session().DropConnection()
	got := make([]byte, len(want))
	if err := d.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("read after the reconnects' connections were lost again: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read returned other data")
	}
	if n := d.Session().Logins(); n < 5 {
		t.Fatalf("%d logins: want the first, three lost again and the lasting one", n)
	}
}
