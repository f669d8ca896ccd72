package iscsi

import (
	"fmt"
	"net"
	"runtime"

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
//     runs out of input and is about to block, it writes them all at
//     once, as far as the socket takes them without waiting, and leaves
//     any rest to the flusher goroutine (the reader must never wait for
//     room in the socket: the target may be waiting for it to read).
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
	return c.sio.WriteBuffers(pdu.Frame(h, data, c.dg, &c.hdrBuf, &c.tailBuf))
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
		err := c.sio.WriteBuffers(b)
		c.wmu.Lock()
		if err != nil {
			c.writeFailedLocked(err)
			c.wmu.Unlock()
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
		var b net.Buffers
		switch {
		case c.werr != nil:
		case c.rest != nil:
			// The reader's flush stopped for room in the socket; it left
			// the writing flag set for this one to finish.
			b, c.rest = c.rest, nil
		case len(c.pending) > 0 && !c.writing:
			b = c.takeLocked()
		}
		c.wmu.Unlock()
		if b != nil {
			_ = c.flush(b)
		}
	}
}

// writeFailedLocked fails the connection after a socket write error; the
// caller holds the write side.
func (c *conn) writeFailedLocked(err error) {
	c.werr = err
	c.writing = false
	c.pending = nil
	c.rest = nil
	c.fail(fmt.Errorf("%w: %w", errConnLost, err))
}

// flushNoWait writes the queue as far as the socket takes it without
// waiting and leaves the rest, with the writing flag, to the flusher.
func (c *conn) flushNoWait() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(c.pending) > 0 && !c.writing && c.werr == nil {
		b := c.takeLocked()
		c.wmu.Unlock()
		rest, err := c.sio.TryWriteBuffers(b)
		c.wmu.Lock()
		if err != nil {
			c.writeFailedLocked(err)
			return err
		}
		if rest != nil {
			c.rest = rest
			select {
			case c.flushCh <- struct{}{}:
			default:
			}
			return nil
		}
		c.writing = false
	}
	return nil
}

// idleHook sits between the reader's buffer and the socket: every time
// the reader must wait for input it is idle, and queued PDUs go out.
type idleHook struct{ c *conn }

func (h idleHook) Read(p []byte) (int, error) {
	c := h.c
	if len(c.ready) > 0 {
		// Wake the callers of the answers read, and let them send their
		// next commands, so that these go out together below rather than
		// one write each.
		c.deliver()
		runtime.Gosched()
	}
	c.readerIdle.Store(true)
	if err := c.flushNoWait(); err != nil {
		return 0, err
	}
	n, err := c.sio.Read(p)
	c.readerIdle.Store(false)
	return n, err
}
