package iscsi

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
)

// recorder is a net.Conn that keeps what is written to it.
type recorder struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	return r.buf.Write(p)
}
func (r *recorder) Read([]byte) (int, error)         { select {} }
func (r *recorder) Close() error                     { return nil }
func (r *recorder) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (r *recorder) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (r *recorder) SetDeadline(time.Time) error      { return nil }
func (r *recorder) SetReadDeadline(time.Time) error  { return nil }
func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

// TestWriterGathersInOrder queues PDUs of mixed sizes while the reader is
// busy and while it is idle, and checks the byte stream is exactly the
// PDUs in order, with digests.
func TestWriterGathersInOrder(t *testing.T) {
	cfg := DefaultConfig()
	rec := &recorder{}
	c := newConn(&cfg, rec, [6]byte{})
	c.dg = pdu.Digests{Header: true, Data: true}
	var want bytes.Buffer
	sizes := []int{0, 1, 512, 4096, gatherMax, gatherMax + 1, 100 << 10, 3, 8192}
	datas := make([][]byte, 0)
	queue := func(i int) {
		n := sizes[i%len(sizes)]
		d := bytes.Repeat([]byte{byte(i)}, n)
		datas = append(datas, d)
		var h pdu.BHS
		h[0] = byte(pdu.OpDataOut)
		h.PutU32(16, uint32(i))
		var hb [pdu.BHSLen + 4]byte
		var tb [8]byte
		hc := h
		for _, p := range pdu.Frame(&hc, d, c.dg, &hb, &tb) {
			want.Write(p)
		}
		c.lockW()
		if err := c.queuePDU(&h, d); err != nil {
			t.Fatal(err)
		}
		if err := c.unlockW(); err != nil {
			t.Fatal(err)
		}
	}
	// Reader busy: everything is only queued.
	c.readerIdle.Store(false)
	for i := 0; i < 200; i++ {
		queue(i)
	}
	if rec.writes != 0 {
		t.Fatalf("%d writes while the reader was busy", rec.writes)
	}
	c.wmu.Lock()
	b := c.takeLocked()
	c.wmu.Unlock()
	if err := c.flush(b); err != nil {
		t.Fatal(err)
	}
	// Reader idle: each writer flushes by itself.
	c.readerIdle.Store(true)
	for i := 200; i < 260; i++ {
		queue(i)
	}
	if !bytes.Equal(rec.buf.Bytes(), want.Bytes()) {
		t.Fatalf("stream of %d bytes differs from the %d queued", rec.buf.Len(), want.Len())
	}
	if c.writing || len(c.pending) != 0 {
		t.Fatal("writer left work behind")
	}
	// Every PDU decodes back from the stream.
	r := bytes.NewReader(rec.buf.Bytes())
	for i := range datas {
		h, err := pdu.ReadHeader(r, c.dg, 1<<20)
		if err != nil {
			t.Fatalf("PDU %d: %v", i, err)
		}
		got := make([]byte, h.DataLen())
		if err := pdu.ReadData(r, got, c.dg); err != nil || !bytes.Equal(got, datas[i]) || h.ITT() != uint32(i) {
			t.Fatalf("PDU %d differs (%v)", i, err)
		}
	}
}

// TestAnswerReadBeforeTheEndIsKept checks that a caller whose answer the
// reader has read, but not yet handed over, gets that answer even when
// the connection dies or the caller's context ends meanwhile, instead of
// an outcome-unknown error for a command that completed.
func TestAnswerReadBeforeTheEndIsKept(t *testing.T) {
	for _, end := range []string{"connection dies", "context ends"} {
		t.Run(end, func(t *testing.T) {
			cfg := DefaultConfig()
			c := newConn(&cfg, &recorder{}, [6]byte{})
			tk := &task{itt: 7, op: 0x2a, done: make(chan struct{})}
			c.tasks[tk.itt] = tk
			c.inflight = 1
			// The reader read GOOD status for the write.
			c.finishLater(tk)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if end == "connection dies" {
				c.fail(errConnLost)
			} else {
				cancel()
			}
			res := make(chan error, 1)
			go func() {
				got, err := c.wait(ctx, tk, &cmd{})
				if err == nil && got != tk {
					err = errors.New("another task came back")
				}
				res <- err
			}()
			select {
			case err := <-res:
				t.Fatalf("wait returned before the reader handed the answer over: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			// The reader runs out of input (or stops) and hands it over.
			c.deliver()
			close(c.readerDone)
			select {
			case err := <-res:
				if err != nil {
					t.Fatalf("answered write reported as %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("wait did not return")
			}
		})
	}
}
