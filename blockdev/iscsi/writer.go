package iscsi

import (
	"fmt"
	"net"

	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
)

// The write side of a connection gathers PDUs so that many commands in
// flight cost few system calls, without delaying a lone command:
//
//   - Writers queue PDUs under wmu (lockW, queuePDU, unlockW), which also
//     keeps CmdSN order equal to wire order. Small parts are copied into
//     an arena; large data segments are referenced.
//   - While the reader goroutine is busy handing out completions, the
//     commands their callers send next are only queued; when the reader
//     runs out of input and is about to block, it asks the flusher
//     goroutine to write them all at once.
//   - When the reader is idle (blocked on the socket) a writer flushes by
//     itself, so a lone command goes out at once.
//   - One flush runs at a time (writing); whoever flushes keeps writing
//     until the queue is empty. Socket writes happen outside wmu.

// gatherMax is the largest data segment copied into the arena; larger
// ones are referenced, and the caller's buffer stays untouched until the
// command ends.
const gatherMax = 16 << 10

// writePDU sends one PDU at once, bypassing the queue; only for login and
// discovery, before the connection has a reader.
func (c *conn) writePDU(h *pdu.BHS, data []byte) error {
	bufs := net.Buffers(pdu.Frame(h, data, c.dg, &c.hdrBuf, &c.tailBuf))
	_, err := bufs.WriteTo(c.nc)
	return err
}

// lockW takes the write side.
func (c *conn) lockW() { c.wmu.Lock() }

// queuePDU queues a PDU; the caller holds the write side.
func (c *conn) queuePDU(h *pdu.BHS, data []byte) error {
	if c.werr != nil {
		return c.werr
	}
	for i, p := range pdu.Frame(h, data, c.dg, &c.hdrBuf, &c.tailBuf) {
		if i == 1 && len(p) > gatherMax {
			c.pending = append(c.pending, p)
			c.segOpen = false
			continue
		}
		a := c.arena[c.cur]
		if !c.segOpen {
			c.segStart = len(a)
			c.pending = append(c.pending, nil)
			c.segOpen = true
		}
		a = append(a, p...)
		c.arena[c.cur] = a
		// The open segment grows in place; after the arena moved, the new
		// array holds the earlier bytes too.
		c.pending[len(c.pending)-1] = a[c.segStart:len(a):len(a)]
	}
	return nil
}

// takeLocked hands the queue to a flush and switches arenas; the previous
// flush, which used the other arena, has finished.
func (c *conn) takeLocked() net.Buffers {
	b := c.pending
	c.pending = nil
	c.cur ^= 1
	c.arena[c.cur] = c.arena[c.cur][:0]
	c.segOpen = false
	c.writing = true
	return b
}

// unlockW releases the write side, flushing when the reader is idle and
// no flush runs. A write error fails the connection and is returned.
func (c *conn) unlockW() error {
	if err := c.werr; err != nil {
		c.wmu.Unlock()
		return err
	}
	var batch net.Buffers
	if len(c.pending) > 0 && !c.writing && c.readerIdle.Load() {
		batch = c.takeLocked()
	}
	c.wmu.Unlock()
	if batch != nil {
		return c.flush(batch)
	}
	return nil
}

// flush writes batch and whatever is queued meanwhile; the caller owns
// the writing flag.
func (c *conn) flush(b net.Buffers) error {
	for {
		_, err := b.WriteTo(c.nc)
		c.wmu.Lock()
		if err != nil {
			c.werr = err
			c.writing = false
			c.pending = nil
			c.wmu.Unlock()
			c.fail(fmt.Errorf("%w: %w", errConnLost, err))
			return err
		}
		if len(c.pending) == 0 {
			c.writing = false
			c.wmu.Unlock()
			return nil
		}
		b = c.takeLocked()
		c.wmu.Unlock()
	}
}

// flusher writes what writers queued while the reader was busy.
func (c *conn) flusher() {
	defer c.wg.Done()
	for {
		select {
		case <-c.dead:
			return
		case <-c.flushCh:
		}
		c.wmu.Lock()
		if len(c.pending) == 0 || c.writing || c.werr != nil {
			c.wmu.Unlock()
			continue
		}
		b := c.takeLocked()
		c.wmu.Unlock()
		_ = c.flush(b)
	}
}

// idleHook sits between the reader's buffer and the socket: every time
// the reader must wait for input it is idle, and queued PDUs go out.
type idleHook struct{ c *conn }

func (h idleHook) Read(p []byte) (int, error) {
	c := h.c
	c.readerIdle.Store(true)
	c.wmu.Lock()
	kick := len(c.pending) > 0 && !c.writing
	c.wmu.Unlock()
	if kick {
		select {
		case c.flushCh <- struct{}{}:
		default:
		}
	}
	n, err := c.nc.Read(p)
	c.readerIdle.Store(false)
	return n, err
}
