package iscsi

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
)

// fakeTarget is a scripted iSCSI target on loopback for the cases a real
// target will not produce on demand: rejects, asynchronous messages,
// target pings and malformed PDUs.
type fakeTarget struct {
	t      *testing.T
	l      net.Listener
	onCmd  func(fc *fakeConn, h pdu.BHS)
	logins atomic.Int32
	seen   chan pdu.BHS // every PDU received after login
	wg     sync.WaitGroup
}

type fakeConn struct {
	nc     net.Conn
	br     *bufio.Reader
	mu     sync.Mutex
	statSN uint32
}

func newFakeTarget(t *testing.T, onCmd func(fc *fakeConn, h pdu.BHS)) *fakeTarget {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{t: t, l: l, onCmd: onCmd, seen: make(chan pdu.BHS, 1024)}
	ft.wg.Add(1)
	go ft.accept()
	t.Cleanup(func() { l.Close(); ft.wg.Wait() })
	return ft
}

func (ft *fakeTarget) accept() {
	defer ft.wg.Done()
	for {
		nc, err := ft.l.Accept()
		if err != nil {
			return
		}
		ft.wg.Add(1)
		go func() {
			defer ft.wg.Done()
			defer nc.Close()
			ft.serve(&fakeConn{nc: nc, br: bufio.NewReader(nc)})
		}()
	}
}

// send writes a target PDU with StatSN and an open command window.
func (fc *fakeConn) send(h pdu.BHS, data []byte, advance bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	h.PutU32(24, fc.statSN)
	if advance {
		fc.statSN++
	}
	h.PutU32(28, 1)
	h.PutU32(32, 1000000)
	var hb [pdu.BHSLen + 4]byte
	var tb [8]byte
	bufs := net.Buffers(pdu.Frame(&h, data, pdu.Digests{}, &hb, &tb))
	_, _ = bufs.WriteTo(fc.nc)
}

// raw writes bytes as they are.
func (fc *fakeConn) raw(b []byte) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	_, _ = fc.nc.Write(b)
}

func (ft *fakeTarget) serve(fc *fakeConn) {
	for {
		h, err := pdu.ReadHeader(fc.br, pdu.Digests{}, 1<<20)
		if err != nil {
			return
		}
		data := make([]byte, h.DataLen())
		if pdu.ReadData(fc.br, data, pdu.Digests{}) != nil {
			return
		}
		switch h.Opcode() {
		case pdu.OpLogin:
			var r pdu.BHS
			r[0] = byte(pdu.OpLoginRsp)
			r[1] = h[1] & 0x8f // T, CSG, NSG as asked
			copy(r[8:16], h[8:16])
			if h[1]&0x80 != 0 && h[1]&3 == 3 {
				r[14], r[15] = 0, 1 // TSIH on the final response
				ft.logins.Add(1)
			}
			r.PutU32(16, h.ITT())
			var text []byte
			if h[1]>>2&3 == 1 {
				text = pdu.EncodeText([]pdu.KV{{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
					{Key: "MaxRecvDataSegmentLength", Value: "65536"}, {Key: "InitialR2T", Value: "Yes"},
					{Key: "ImmediateData", Value: "Yes"}})
			}
			fc.send(r, text, true)
		case pdu.OpLogout:
			ft.seen <- h
			var r pdu.BHS
			r[0] = byte(pdu.OpLogoutRsp)
			r[1] = 0x80
			r.PutU32(16, h.ITT())
			fc.send(r, nil, true)
			return
		default:
			ft.seen <- h
			if h.Opcode() == pdu.OpSCSICmd && ft.onCmd != nil {
				ft.onCmd(fc, h)
			}
		}
	}
}

// good answers a command with GOOD status and, for reads, zeros.
func good(fc *fakeConn, h pdu.BHS) {
	if n := h.U32(20); h[1]&0x40 != 0 && n > 0 {
		var d pdu.BHS
		d[0] = byte(pdu.OpDataIn)
		d[1] = 0x81
		d.PutU32(16, h.ITT())
		fc.send(d, make([]byte, n), true)
		return
	}
	var r pdu.BHS
	r[0] = byte(pdu.OpSCSIResp)
	r[1] = 0x80
	r.PutU32(16, h.ITT())
	fc.send(r, nil, true)
}

func (ft *fakeTarget) dial(t *testing.T, tune func(*Config)) *Session {
	cfg := DefaultConfig()
	cfg.Portal, cfg.Target = ft.l.Addr().String(), "iqn.2026-01.io.shoal:fake"
	cfg.Logger = testlog.New(t, "iscsi")
	cfg.ReconnectAttempts, cfg.ReconnectDelay = 2, 10*time.Millisecond
	if tune != nil {
		tune(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func fakeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFakeTargetReject(t *testing.T) {
	ft := newFakeTarget(t, func(fc *fakeConn, h pdu.BHS) {
		var r pdu.BHS
		r[0] = byte(pdu.OpReject)
		r[1] = 0x80
		r[2] = 0x04 // protocol error
		r.PutU32(16, pdu.ReservedTag)
		fc.send(r, h[:], false)
	})
	s := ft.dial(t, nil)
	err := s.Read(fakeCtx(t), 1, 0, 1, make([]byte, 512))
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("rejected read: %v", err)
	}
	err = s.Write(fakeCtx(t), 1, 0, 1, make([]byte, 512))
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("rejected write: %v (a rejected command was not executed)", err)
	}
}

func TestFakeTargetMalformedDataIn(t *testing.T) {
	ft := newFakeTarget(t, func(fc *fakeConn, h pdu.BHS) {
		var d pdu.BHS
		d[0] = byte(pdu.OpDataIn)
		d[1] = 0x81
		d.PutU32(16, h.ITT())
		d.PutU32(40, 1<<20) // offset far beyond the buffer
		fc.send(d, make([]byte, 512), true)
	})
	s := ft.dial(t, nil)
	err := s.Read(fakeCtx(t), 1, 0, 1, make([]byte, 512))
	if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Data-In beyond the buffer: %v, want a protocol error", err)
	}
}

func TestFakeTargetGarbage(t *testing.T) {
	ft := newFakeTarget(t, func(fc *fakeConn, h pdu.BHS) {
		b := make([]byte, 48)
		b[0] = 0x3e // an opcode no target sends
		fc.raw(b)
	})
	s := ft.dial(t, nil)
	err := s.Write(fakeCtx(t), 1, 0, 1, make([]byte, 512))
	if !errors.Is(err, blockdev.ErrWriteOutcomeUnknown) {
		t.Fatalf("write answered with garbage: %v, want outcome unknown", err)
	}
	if !errors.Is(err, pdu.ErrBadOpcode) {
		t.Fatalf("error does not say what was wrong: %v", err)
	}
}

func TestFakeTargetPingAndAsyncLogout(t *testing.T) {
	var calls atomic.Int32
	ft := newFakeTarget(t, func(fc *fakeConn, h pdu.BHS) {
		good(fc, h)
		switch calls.Add(1) {
		case 1: // a ping that wants an answer
			var n pdu.BHS
			n[0] = byte(pdu.OpNOPIn)
			n[1] = 0x80
			n.PutU32(16, pdu.ReservedTag)
			n.PutU32(20, 0x1234)
			fc.send(n, nil, false)
		case 2: // a request to log out
			var a pdu.BHS
			a[0] = byte(pdu.OpAsync)
			a[1] = 0x80
			a.PutU32(16, pdu.ReservedTag)
			a[36] = pdu.AsyncRequestLogout
			fc.send(a, nil, true)
		}
	})
	s := ft.dial(t, nil)
	ctx := fakeCtx(t)
	waitFor := func(what string, match func(h pdu.BHS) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case h := <-ft.seen:
				if match(h) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s", what)
			}
		}
	}
	if err := s.TestUnitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitFor("answer to the target's ping", func(h pdu.BHS) bool {
		return h.Opcode() == pdu.OpNOPOut && h.U32(20) == 0x1234 && h.ITT() == pdu.ReservedTag
	})
	if err := s.TestUnitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitFor("logout after the target asked", func(h pdu.BHS) bool { return h.Opcode() == pdu.OpLogout })
	// The next command logs in again.
	if err := s.TestUnitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := ft.logins.Load(); n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}
}

// TestKeepaliveOnFakeClock drives the keepalive with a fake clock against
// a target that never answers pings: one ping goes out once the line is
// idle for NopInterval, and the connection is dropped once the ping is
// NopTimeout old.
func TestKeepaliveOnFakeClock(t *testing.T) {
	ft := newFakeTarget(t, good)
	fake := clock.NewFake(time.Unix(1_800_000_000, 0))
	s := ft.dial(t, func(c *Config) {
		c.Clock = fake
		c.NopInterval, c.NopTimeout = 2*time.Second, 3*time.Second
		c.CommandTimeout = 60 * time.Second
		c.ReconnectAttempts = 0
	})
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	// The ticker exists once the keepalive goroutine started.
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer bcancel()
	if err := fake.BlockUntilContext(bctx, 1); err != nil {
		t.Fatalf("keepalive ticker: %v", err)
	}
	fake.Advance(time.Second)
	select {
	case h := <-ft.seen:
		t.Fatalf("ping after 1s of a 2s interval: %v", h.Opcode())
	case <-time.After(50 * time.Millisecond):
	}
	fake.Advance(time.Second)
	select {
	case h := <-ft.seen:
		if h.Opcode() != pdu.OpNOPOut || h.ITT() == pdu.ReservedTag {
			t.Fatalf("expected a ping, got %v", h.Opcode())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ping after the idle interval")
	}
	if c.deadErr() != nil {
		t.Fatal("connection dropped before the ping timed out")
	}
	for i := 0; i < 4 && c.deadErr() == nil; i++ {
		fake.Advance(time.Second)
		time.Sleep(20 * time.Millisecond)
	}
	testutil.WaitFor(t, 5*time.Second, "the connection to drop", func() bool { return c.deadErr() != nil })
	if err := c.deadErr(); !errors.Is(err, errConnLost) {
		t.Fatalf("dropped with %v", err)
	}
}
