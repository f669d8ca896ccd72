package web

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// writeBehindListener hands out its connections as writeBehindConns of at
// most limit queued bytes each (Config.WriteBehind; 1 writes every Write
// directly), their queues from one set of buffer pools, each write to the
// socket bounded by sendTimeout (Config.SendTimeout; 0: none).
type writeBehindListener struct {
	net.Listener
	limit       int
	sendTimeout time.Duration
	bufs        *queueBufs
}

func newWriteBehindListener(ln net.Listener, limit int, sendTimeout time.Duration) writeBehindListener {
	return writeBehindListener{Listener: ln, limit: limit, sendTimeout: sendTimeout, bufs: newQueueBufs(limit)}
}

// queueBufs are the queues' buffers, pooled by size: 4 KiB and the
// limit. A connection takes the smaller while what it queues fits, so
// one queuing a 1 KiB answer holds 4 KiB, not the limit, and moves to the
// limit's at once when more waits: a queue starts anew each time its
// writer has emptied it, and moving up in steps (16 KiB, then 64) copied
// enough at every burst of HTTP/2 frames to cost a quarter more CPU per
// 16 KiB answer.
type queueBufs struct {
	sizes []int
	pools []sync.Pool
}

func newQueueBufs(limit int) *queueBufs {
	q := &queueBufs{}
	if small := 4 << 10; small < limit {
		q.sizes = append(q.sizes, small)
	}
	q.sizes = append(q.sizes, limit)
	q.pools = make([]sync.Pool, len(q.sizes))
	return q
}

// get is an empty buffer of at least n bytes' capacity (at most the
// limit's).
func (q *queueBufs) get(n int) []byte {
	for i, size := range q.sizes {
		if n <= size || i == len(q.sizes)-1 {
			if b, ok := q.pools[i].Get().(*[]byte); ok {
				return (*b)[:0]
			}
			return make([]byte, 0, size)
		}
	}
	panic("unreachable: newQueueBufs made no size")
}

// put gives b, from get, back to its pool.
func (q *queueBufs) put(b []byte) {
	for i, size := range q.sizes {
		if cap(b) == size {
			b = b[:0]
			q.pools[i].Put(&b)
			return
		}
	}
}

// Accept is the inner listener's Accept, the connection wrapped.
func (l writeBehindListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newWriteBehindConn(c, l.limit, l.bufs, l.sendTimeout), nil
}

// writeBehindLinger bounds how long a closed connection's writer goes on
// writing bytes accepted before the Close to a peer that does not read
// them: after it the bytes are dropped and the socket closed. TLS gives its
// close_notify alert the same 5 s (crypto/tls Conn.Close).
const writeBehindLinger = 5 * time.Second

// sendChunk is the most a connection with a send timeout writes to its
// socket in one call: each call must end within the timeout, so a peer
// taking at least sendChunk bytes per Config.SendTimeout keeps its
// connection however long the answer.
const sendChunk = 256 << 10

// A writeBehindConn accepts Writes into a queue and writes the queue to
// the inner connection from a goroutine of its own, all that has gathered
// at once, while the caller goes on. net/http's servers write in pieces:
// HTTP/1.1 an answer's header, then its body in calls around its 4 KiB
// buffer (two or three system calls for a 16 KiB answer); HTTP/2 each
// frame, flushing whenever its queue of frames runs dry, which under load
// is a system call for about every frame. The pieces gather here while
// the previous system call runs, and go out together.
//
// Bytes of one Write are never interleaved with another's; the order of
// Writes is kept. A Write returns once its bytes are queued, or, for a
// Write of at least limit bytes to a connection with nothing queued, once
// they are written (net/http writes a large answer in one call; copying it
// buys nothing). It waits while limit bytes are queued. An error of the
// inner connection is returned by the next Write and every one after
// (bytes queued then are dropped, as a socket's are when it fails). The
// write deadline bounds Writes waiting for room, not the writing of bytes
// already queued, which goes on as a socket's send buffer does, until it
// fails, or for writeBehindLinger after Close.
//
// With a send timeout, every write to the socket (of at most sendChunk
// bytes) must end within it, whoever waits for it; one that does not
// fails the connection with errSendTimeout and closes the socket, so that
// a peer that stopped reading gives back its goroutines and queue (nginx's
// send_timeout: the time between two successive writes to the client).
type writeBehindConn struct {
	net.Conn
	limit       int
	bufs        *queueBufs
	sendTimeout time.Duration
	// wmu keeps each Write whole: one Write's bytes may be queued in
	// parts while others wait. It also keeps a direct write alone: none
	// starts before the writer has emptied the queue and exited, and
	// nothing is queued while it runs, so no bytes are left behind with
	// no writer.
	wmu sync.Mutex

	mu   sync.Mutex
	cond *sync.Cond // signalled when queued bytes are taken or written, and on errors
	// queued are the bytes accepted and not yet taken by the writer.
	queued []byte
	// spare is the writer's previous batch, reused for the next queue.
	spare []byte
	// writing: the writer goroutine runs (it exits when the queue is
	// empty), or a caller writes directly.
	writing  bool
	err      error
	closed   bool
	deadline time.Time
	timer    *time.Timer // wakes Writes waiting for room at the deadline
	// lingerUntil bounds the socket's writes once Close or CloseWrite
	// has asked for the queue to be written out (writeBehindLinger).
	lingerUntil time.Time
}

func newWriteBehindConn(c net.Conn, limit int, bufs *queueBufs, sendTimeout time.Duration) *writeBehindConn {
	w := &writeBehindConn{Conn: c, limit: limit, bufs: bufs, sendTimeout: sendTimeout}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// errSendTimeout fails a connection whose peer took nothing for the send
// timeout; it is an os.ErrDeadlineExceeded, so net/http treats it as the
// timeout it is.
type errSendTimeout struct{ d time.Duration }

func (e errSendTimeout) Error() string {
	return fmt.Sprintf("web: the peer took nothing of the answer for %v (send timeout): %v", e.d, os.ErrDeadlineExceeded)
}
func (e errSendTimeout) Unwrap() error { return os.ErrDeadlineExceeded }
func (e errSendTimeout) Timeout() bool { return true }

// arm sets the socket's write deadline for one write of at most sendChunk
// bytes: the earliest of user (a caller's deadline, zero for none), the
// linger and the send timeout from now. byTimeout says the send timeout is
// the one that ends it. Called with mu held, so that Close's linger is
// never overwritten by a later one.
func (w *writeBehindConn) arm(user time.Time) (byTimeout bool, err error) {
	d := user
	if t := w.lingerUntil; !t.IsZero() && (d.IsZero() || t.Before(d)) {
		d = t
	}
	if w.sendTimeout > 0 {
		if t := time.Now().Add(w.sendTimeout); d.IsZero() || t.Before(d) {
			d, byTimeout = t, true
		}
	}
	return byTimeout, w.Conn.SetWriteDeadline(d)
}

// writeSocket writes p to the socket, in writes of at most sendChunk
// bytes each armed with arm(user) when there is a send timeout, else in
// one write (under whatever deadline the socket has). A send timeout that
// ends a write fails the connection and closes the socket. Called with mu
// held and w.writing set; mu is let go during the writes.
func (w *writeBehindConn) writeSocket(p []byte, user time.Time) (int, error) {
	if w.sendTimeout <= 0 {
		w.mu.Unlock()
		n, err := w.Conn.Write(p)
		w.mu.Lock()
		return n, err
	}
	done := 0
	for done < len(p) {
		byTimeout, err := w.arm(user)
		if err != nil {
			return done, err
		}
		end := min(len(p), done+sendChunk)
		w.mu.Unlock()
		n, err := w.Conn.Write(p[done:end])
		w.mu.Lock()
		done += n
		if err != nil {
			if byTimeout && os.IsTimeout(err) && w.lingerUntil.IsZero() {
				err = errSendTimeout{w.sendTimeout}
				w.Conn.Close()
			}
			return done, err
		}
	}
	return done, nil
}

// NetConn is the inner connection (as crypto/tls's Conn.NetConn).
func (w *writeBehindConn) NetConn() net.Conn { return w.Conn }

// Write queues p (or writes it, see the type); see the type for when it
// returns and which errors.
func (w *writeBehindConn) Write(p []byte) (int, error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(p) >= w.limit {
		// Large: written here once everything before it is.
		for w.writing && w.usable() == nil {
			w.cond.Wait()
		}
		if err := w.usable(); err != nil {
			return 0, err
		}
		// The write deadline bounds it, as it would a socket's Write.
		if err := w.Conn.SetWriteDeadline(w.deadline); err != nil {
			return 0, err
		}
		w.writing = true
		n, err := w.writeSocket(p, w.deadline)
		w.writing = false
		if err != nil && w.err == nil {
			w.err = err
		}
		w.cond.Broadcast()
		if w.closed {
			// Close came meanwhile and left the socket to this Write.
			w.Conn.Close()
		} else if err == nil {
			err = w.Conn.SetWriteDeadline(time.Time{})
		}
		return n, err
	}
	done := 0
	for done < len(p) {
		for len(w.queued) >= w.limit && w.usable() == nil {
			w.cond.Wait()
		}
		if err := w.usable(); err != nil {
			return done, err
		}
		n := min(len(p)-done, w.limit-len(w.queued))
		if need := len(w.queued) + n; cap(w.queued) < need {
			b := append(w.bufs.get(need), w.queued...)
			if w.queued != nil {
				w.bufs.put(w.queued)
			}
			w.queued = b
		}
		w.queued = append(w.queued, p[done:done+n]...)
		done += n
		if !w.writing {
			w.writing = true
			go w.writeQueued()
		}
	}
	return done, nil
}

// usable is nil while Writes may queue: no error, not closed, deadline
// not passed. Called with mu held.
func (w *writeBehindConn) usable() error {
	switch {
	case w.err != nil:
		return w.err
	case w.closed:
		return net.ErrClosed
	case !w.deadline.IsZero() && !time.Now().Before(w.deadline):
		return os.ErrDeadlineExceeded
	}
	return nil
}

// writeQueued is the writer: it writes what is queued, all at once, until
// nothing is, then exits; after Close it closes the inner connection.
func (w *writeBehindConn) writeQueued() {
	w.mu.Lock()
	for len(w.queued) > 0 && w.err == nil {
		batch := w.queued
		w.queued, w.spare = w.spare, nil
		w.cond.Broadcast()
		_, err := w.writeSocket(batch, time.Time{})
		w.spare = batch[:0]
		if err != nil && w.err == nil {
			w.err = err
		}
	}
	// An idle connection keeps no buffers: a server keeps many idle.
	// After an error the bytes queued are dropped.
	for _, b := range [][]byte{w.queued, w.spare} {
		if b != nil {
			w.bufs.put(b)
		}
	}
	w.queued, w.spare = nil, nil
	w.writing = false
	w.cond.Broadcast()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		w.Conn.Close()
	}
}

// Close stops accepting Writes and closes the connection: at once when
// nothing is queued, else once the writer has written the queue (within
// writeBehindLinger). It returns net.ErrClosed when called again.
func (w *writeBehindConn) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return net.ErrClosed
	}
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.cond.Broadcast()
	if w.writing {
		// The writer (or a direct Write) closes the socket when done;
		// SetWriteDeadline only bounds its time.
		w.lingerUntil = time.Now().Add(writeBehindLinger)
		return w.Conn.SetWriteDeadline(w.lingerUntil)
	}
	return w.Conn.Close()
}

// CloseWrite waits until the queued bytes are written (within
// writeBehindLinger), then shuts down the writing side of the inner
// connection when it can (a *net.TCPConn); net/http does so before
// closing a connection it answered "Connection: close" on.
func (w *writeBehindConn) CloseWrite() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	if w.writing && !w.closed {
		w.lingerUntil = time.Now().Add(writeBehindLinger)
		if err := w.Conn.SetWriteDeadline(w.lingerUntil); err != nil {
			w.mu.Unlock()
			return err
		}
	}
	for w.writing {
		w.cond.Wait()
	}
	err := w.usable()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	return w.closeInnerWrite()
}

// closeInnerWrite shuts down the writing side of the inner connection
// when it can.
func (w *writeBehindConn) closeInnerWrite() error {
	cw, ok := w.Conn.(interface{ CloseWrite() error })
	if !ok {
		return nil
	}
	return cw.CloseWrite()
}

// SetDeadline sets the read deadline of the inner connection and the
// write deadline of Writes waiting for room.
func (w *writeBehindConn) SetDeadline(t time.Time) error {
	if err := w.SetWriteDeadline(t); err != nil {
		return err
	}
	return w.Conn.SetReadDeadline(t)
}

// SetWriteDeadline bounds the Writes that wait for room in the queue or
// for a direct write to start, and a direct write; bytes queued are
// written regardless (see the type).
func (w *writeBehindConn) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return net.ErrClosed
	}
	w.deadline = t
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if !t.IsZero() {
		w.timer = time.AfterFunc(time.Until(t), func() {
			w.mu.Lock()
			w.cond.Broadcast()
			w.mu.Unlock()
		})
	}
	w.cond.Broadcast()
	return nil
}
