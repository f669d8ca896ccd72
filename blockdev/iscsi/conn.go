package iscsi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/scsi"
	"github.com/shoal-ha/shoal/internal/clock"
)

// DialFunc opens a TCP connection to a portal.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// errConnLost is the cause given to tasks whose connection died.
var errConnLost = errors.New("iscsi: connection lost")

// conn is one TCP connection to a target: login, then full-feature phase
// with a reader goroutine that dispatches target PDUs to waiting tasks.
type conn struct {
	cfg    *Config
	log    hclog.Logger
	clk    clock.Clock
	nc     net.Conn
	sio    *sockIO
	br     *bufio.Reader
	params Params
	dg     pdu.Digests
	isid   [6]byte
	tsih   uint16

	// The write side; see writer.go.
	wmu     sync.Mutex // guards the fields down to werr
	pending net.Buffers
	rest    net.Buffers // what the reader could not write at once
	// ready are the tasks the reader ended since it last ran out of
	// input; only the reader touches it.
	ready      []*task
	arena      [2][]byte
	cur        int
	segOpen    bool
	segStart   int
	writing    bool
	werr       error
	hdrBuf     [pdu.BHSLen + 4]byte
	tailBuf    [8]byte
	readerIdle atomic.Bool
	flushCh    chan struct{}

	mu       sync.Mutex
	win      window
	winCh    chan struct{} // closed and replaced when the window may open
	winWait  int           // commands waiting on winCh
	tasks    map[uint32]*task
	nextITT  uint32
	inflight int
	// peak is the most SCSI commands that were in flight at once.
	peak     int
	commands uint64
	lastRecv time.Time
	pingITT  uint32
	pingAt   time.Time
	err      error
	dead     chan struct{}
	// readerDone is closed when the reader has stopped and delivered
	// every answer it read.
	readerDone chan struct{}

	// onAsync receives asynchronous events (called from the reader).
	onAsync func(ev *pdu.AsyncMessage, sense []byte)
	// onAbort is called once for each ABORT TASK this connection sends.
	onAbort func()

	wg sync.WaitGroup
}

// task is one command waiting for the target.
type task struct {
	itt   uint32
	op    byte // CDB opcode, or 0xff for non-SCSI tasks
	lun   uint64
	cmdSN uint32

	mu   sync.Mutex // held by the reader while filling buf
	gone bool       // the waiter left; the reader must not touch buf
	buf  []byte     // Data-In destination
	got  int

	r2t  chan *pdu.R2T
	done chan struct{}

	// Set before done is closed.
	status   byte
	response byte
	sense    []byte
	residual uint32
	under    bool
	err      error
	tmfResp  byte

	// deadline is when the watchdog aborts the task; aborting is set
	// (under conn.mu) once it does.
	deadline time.Time
	aborting bool
}

const nonSCSI = 0xff

func newConn(cfg *Config, nc net.Conn, isid [6]byte) *conn {
	c := &conn{
		cfg: cfg, log: cfg.logger(), clk: cfg.clock(), nc: nc, sio: newSockIO(nc),
		isid:  isid,
		winCh: make(chan struct{}),
		tasks: map[uint32]*task{},
		dead:  make(chan struct{}),

		readerDone: make(chan struct{}),
	}
	c.br = bufio.NewReaderSize(idleHook{c}, 256<<10)
	c.readerIdle.Store(true)
	c.flushCh = make(chan struct{}, 1)
	return c
}

// dial opens a TCP connection to the configured portal.
func dial(ctx context.Context, cfg *Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	d := cfg.Dial
	if d == nil {
		var nd net.Dialer
		d = nd.DialContext
	}
	nc, err := d(ctx, "tcp", cfg.Portal)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return nc, nil
}

// ---- login (synchronous, before the reader starts) ----

func (c *conn) login(ctx context.Context, discovery bool) error {
	deadline := c.clk.Now().Add(c.cfg.LoginTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.nc.SetDeadline(deadline)
	defer c.nc.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	m := newLoginMachine(c.cfg, discovery)
	st := m.first()
	const initialCmdSN = 1
	var expStatSN uint32
	for round := 0; ; round++ {
		if round > 32 {
			return fmt.Errorf("%w: login did not finish in 32 rounds", ErrProtocol)
		}
		req := pdu.LoginRequest{Transit: st.transit, CSG: st.csg, NSG: st.nsg, ISID: c.isid,
			ITT: 0, CmdSN: initialCmdSN, ExpStatSN: expStatSN}
		if !st.transit {
			req.NSG = 0
		}
		var h pdu.BHS
		req.Encode(&h)
		if err := c.writePDU(&h, pdu.EncodeText(st.kvs)); err != nil {
			return c.loginIOErr(ctx, err)
		}
		rh, err := pdu.ReadHeader(c.br, pdu.Digests{}, 64<<10)
		if err != nil {
			return c.loginIOErr(ctx, err)
		}
		p, err := pdu.ParseTarget(&rh)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		rsp, ok := p.(*pdu.LoginResponse)
		if !ok {
			return fmt.Errorf("%w: got %v during login", ErrProtocol, rh.Opcode())
		}
		data := make([]byte, rh.DataLen())
		if err := pdu.ReadData(c.br, data, pdu.Digests{}); err != nil {
			return c.loginIOErr(ctx, err)
		}
		if rsp.StatusClass == 0 {
			expStatSN = rsp.StatSN + 1
		}
		next, done, err := m.next(rsp, data)
		if err != nil {
			return err
		}
		if done {
			c.params = m.neg.p
			c.dg = pdu.Digests{Header: c.params.HeaderDigest, Data: c.params.DataDigest}
			c.tsih = rsp.TSIH
			c.win = window{cmdSN: initialCmdSN, expStatSN: expStatSN}
			c.win.expCmdSN, c.win.maxCmdSN = rsp.ExpCmdSN, rsp.MaxCmdSN
			c.lastRecv = c.clk.Now()
			return nil
		}
		st = next
	}
}

func (c *conn) loginIOErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The socket deadline is the earlier of the login timeout and
		// the caller's deadline, and may fire just before the latter.
		return fmt.Errorf("%w: no answer from the target within the login time (%v, or the caller's deadline if sooner)",
			context.DeadlineExceeded, c.cfg.LoginTimeout)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: target closed the connection during login", ErrLoginFailed)
	}
	return fmt.Errorf("iscsi: login I/O: %w", err)
}

// ---- full-feature phase ----

// start launches the reader and, if configured, the keepalive.
func (c *conn) start() {
	c.readerIdle.Store(true)
	c.wg.Add(2)
	go c.readLoop()
	go c.flusher()
	c.wg.Add(1)
	go c.keepalive()
}

// fail marks the connection dead with cause err and closes the socket.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.dead)
	c.mu.Unlock()
	_ = c.nc.Close()
}

// close drops the connection and waits for its goroutines.
func (c *conn) close(err error) {
	c.fail(err)
	c.wg.Wait()
}

func (c *conn) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// seq applies the sequence numbers of a target PDU.
func (c *conn) seq(s pdu.SeqNums) {
	c.mu.Lock()
	if s.HasStatSN {
		c.win.status(s.StatSN)
	}
	if c.win.update(s.ExpCmdSN, s.MaxCmdSN) {
		c.wakeWindowLocked()
	}
	c.lastRecv = c.clk.Now()
	c.mu.Unlock()
}

func (c *conn) lookup(itt uint32) *task {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tasks[itt]
}

// wakeWindowLocked wakes the commands waiting for room in the window or
// the queue; the caller holds mu.
func (c *conn) wakeWindowLocked() {
	if c.winWait > 0 {
		close(c.winCh)
		c.winCh = make(chan struct{})
	}
}

// finish ends t with the fields already set, once.
func (c *conn) finish(t *task) {
	if c.retire(t) {
		close(t.done)
	}
}

// finishLater is finish for the reader: it wakes t's caller only when it
// runs out of input (deliver), so that the callers of one batch of
// answers wake together.
func (c *conn) finishLater(t *task) {
	if c.retire(t) {
		c.ready = append(c.ready, t)
	}
}

// deliver wakes the callers of the tasks the reader ended.
func (c *conn) deliver() {
	for i, t := range c.ready {
		close(t.done)
		c.ready[i] = nil
	}
	c.ready = c.ready[:0]
}

// retire removes t from the tasks and reports whether it was there.
func (c *conn) retire(t *task) bool {
	c.mu.Lock()
	if c.tasks[t.itt] == t {
		delete(c.tasks, t.itt)
		if t.op != nonSCSI {
			c.inflight--
			c.wakeWindowLocked()
		}
	} else {
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	return true
}

func (c *conn) readLoop() {
	defer c.wg.Done()
	err := c.readPDUs()
	c.deliver()
	close(c.readerDone)
	c.fail(err)
	c.log.Debug("connection reader stopped", "error", err)
}

func (c *conn) readPDUs() error {
	maxData := c.params.MaxRecvDataSegment
	if maxData < 64<<10 {
		// Text and sense segments may be larger than a tiny data limit.
		maxData = 64 << 10
	}
	for {
		h, err := pdu.ReadHeader(c.br, c.dg, maxData)
		if err != nil {
			return fmt.Errorf("%w: %w", errConnLost, err)
		}
		p, err := pdu.ParseTarget(&h)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		c.seq(p.Seq())
		n := h.DataLen()
		if d, ok := p.(*pdu.DataIn); ok {
			if err := c.dataIn(d, n); err != nil {
				return err
			}
			continue
		}
		// Other PDUs carry at most maxData bytes: read the segment whole.
		data := make([]byte, n)
		if err := pdu.ReadData(c.br, data, c.dg); err != nil {
			return fmt.Errorf("%w: %w", errConnLost, err)
		}
		switch p := p.(type) {
		case *pdu.SCSIResponse:
			if t := c.lookup(p.ITT); t != nil {
				t.response, t.status, t.residual, t.under = p.Response, p.Status, p.Residual, p.Underflow
				if p.Response != 0 {
					t.err = fmt.Errorf("%w: iSCSI response 0x%02x (target failure)", ErrTaskAborted, p.Response)
				}
				sense, ok := senseData(data)
				if !ok {
					return fmt.Errorf("%w: sense length beyond its %d-byte segment", ErrProtocol, len(data))
				}
				t.sense = sense
				c.finishLater(t)
			}
		case *pdu.R2T:
			t := c.lookup(p.ITT)
			if t == nil {
				continue
			}
			select {
			case t.r2t <- p:
			default:
				return fmt.Errorf("%w: more outstanding R2Ts than negotiated", ErrProtocol)
			}
		case *pdu.NOPIn:
			if p.ITT != pdu.ReservedTag {
				c.mu.Lock()
				if p.ITT == c.pingITT {
					c.pingITT = 0
				}
				c.mu.Unlock()
			}
			if p.TTT != pdu.ReservedTag {
				c.wg.Add(1)
				go c.nopReply(p.TTT, p.LUN)
			}
		case *pdu.TaskMgmtResponse:
			if t := c.lookup(p.ITT); t != nil {
				t.tmfResp = p.Response
				c.finish(t)
			}
		case *pdu.LogoutResponse:
			if t := c.lookup(p.ITT); t != nil {
				t.response = p.Response
				c.finish(t)
			}
		case *pdu.AsyncMessage:
			sense, _ := senseData(data)
			c.log.Info("asynchronous message", "event", p.Event, "param1", p.Param1, "param2", p.Param2)
			if c.onAsync != nil {
				c.onAsync(p, sense)
			}
			if p.Event == pdu.AsyncDropConnection || p.Event == pdu.AsyncDropAllConns {
				return fmt.Errorf("%w: target announced it drops the connection", errConnLost)
			}
		case *pdu.Reject:
			itt, ok := pdu.RejectedITT(data)
			c.log.Warn("target rejected a PDU", "reason", p.Reason, "itt", itt)
			if ok {
				if t := c.lookup(itt); t != nil {
					t.err = fmt.Errorf("%w: reason 0x%02x", ErrRejected, p.Reason)
					c.finish(t)
				}
			}
		default:
			return fmt.Errorf("%w: unexpected %v in full-feature phase", ErrProtocol, h.Opcode())
		}
	}
}

// senseData returns the sense data of a data segment that starts with
// its two-byte length (none when the segment is shorter); ok is false when
// that length runs past the segment.
func senseData(data []byte) (sense []byte, ok bool) {
	if len(data) < 2 {
		return nil, true
	}
	sl := int(data[0])<<8 | int(data[1])
	if sl > len(data)-2 {
		return nil, false
	}
	return data[2 : 2+sl], true
}

// directMin is the smallest Data-In segment read straight from the socket
// into the caller's buffer; smaller ones come through the read buffer,
// which takes several in one system call.
const directMin = 32 << 10

func (c *conn) dataIn(p *pdu.DataIn, n int) error {
	t := c.lookup(p.ITT)
	if t != nil {
		t.mu.Lock()
		if t.gone {
			t.mu.Unlock()
			t = nil
		}
	}
	if t == nil {
		// A task this initiator stopped waiting for: drop its data.
		if err := pdu.Discard(c.br, n, c.dg); err != nil {
			return fmt.Errorf("%w: %w", errConnLost, err)
		}
		return nil
	}
	off := int64(p.BufferOffset)
	if off+int64(n) > int64(len(t.buf)) {
		t.mu.Unlock()
		return fmt.Errorf("%w: Data-In of %d bytes at offset %d beyond the %d-byte buffer", ErrProtocol, n, off, len(t.buf))
	}
	var err error
	if n >= directMin {
		err = pdu.ReadDataFrom(c.br, idleHook{c}, t.buf[off:off+int64(n)], c.dg)
	} else {
		err = pdu.ReadData(c.br, t.buf[off:off+int64(n)], c.dg)
	}
	t.got += n
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", errConnLost, err)
	}
	if p.StatusPresent {
		t.status, t.residual, t.under = p.Status, p.Residual, p.Underflow
		c.finishLater(t)
	}
	return nil
}

func (c *conn) nopReply(ttt uint32, lun uint64) {
	defer c.wg.Done()
	c.lockW()
	c.mu.Lock()
	n := pdu.NOPOut{Immediate: true, LUN: lun, ITT: pdu.ReservedTag, TTT: ttt, CmdSN: c.win.cmdSN, ExpStatSN: c.win.expStatSN}
	c.mu.Unlock()
	var h pdu.BHS
	n.Encode(&h)
	_ = c.queuePDU(&h, nil)
	_ = c.unlockW()
}

// keepalive pings an idle connection and declares it dead when the ping
// goes unanswered, and aborts commands that outlived CommandTimeout. One
// ticker per connection does both, so commands carry no timer each.
func (c *conn) keepalive() {
	defer c.wg.Done()
	tick := c.cfg.CommandTimeout / 4
	if c.cfg.NopInterval > 0 {
		tick = min(tick, c.cfg.NopInterval/2)
	}
	tk := c.clk.NewTicker(max(tick, time.Millisecond))
	defer tk.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-tk.C():
		}
		now := c.clk.Now()
		c.expire(now)
		if c.cfg.NopInterval <= 0 {
			continue
		}
		c.mu.Lock()
		if c.pingITT != 0 && now.Sub(c.pingAt) >= c.cfg.NopTimeout {
			c.mu.Unlock()
			c.log.Warn("keepalive unanswered, dropping connection", "timeout", c.cfg.NopTimeout)
			c.fail(fmt.Errorf("%w: no answer to NOP-Out within %v", errConnLost, c.cfg.NopTimeout))
			return
		}
		idle := c.pingITT == 0 && now.Sub(c.lastRecv) >= c.cfg.NopInterval
		var itt uint32
		if idle {
			itt = c.allocITT()
			c.pingITT, c.pingAt = itt, now
		}
		c.mu.Unlock()
		if idle {
			c.lockW()
			c.mu.Lock()
			n := pdu.NOPOut{Immediate: true, ITT: itt, TTT: pdu.ReservedTag, CmdSN: c.win.cmdSN, ExpStatSN: c.win.expStatSN}
			c.mu.Unlock()
			var h pdu.BHS
			n.Encode(&h)
			_ = c.queuePDU(&h, nil)
			if c.unlockW() != nil {
				return
			}
		}
	}
}

// expire aborts SCSI tasks whose deadline passed. The abort runs in its
// own goroutine; when the target confirms it, the task ends with
// ErrTaskAborted, otherwise the connection is dropped.
func (c *conn) expire(now time.Time) {
	var late []*task
	c.mu.Lock()
	for _, t := range c.tasks {
		if t.op != nonSCSI && !t.aborting && now.After(t.deadline) {
			t.aborting = true
			late = append(late, t)
		}
	}
	c.mu.Unlock()
	for _, t := range late {
		c.wg.Add(1)
		go func(t *task) {
			defer c.wg.Done()
			cause := fmt.Errorf("iscsi: command 0x%02x timed out after %v", t.op, c.cfg.CommandTimeout)
			c.log.Warn("aborting task", "itt", t.itt, "op", t.op, "cause", cause)
			c.countAbort()
			if _, err := c.taskMgmt(pdu.TMFAbortTask, t.lun, t.itt, t.cmdSN); err != nil {
				c.fail(fmt.Errorf("%w: abort of task 0x%x failed: %w", errConnLost, t.itt, err))
				return
			}
			// The target answers an aborted task with nothing more; end
			// it here unless its answer raced the abort.
			t.mu.Lock()
			t.gone = true
			t.mu.Unlock()
			c.mu.Lock()
			live := c.tasks[t.itt] == t
			c.mu.Unlock()
			if live {
				t.err = fmt.Errorf("%w: %w", ErrTaskAborted, cause)
				c.finish(t)
			}
		}(t)
	}
}

// allocITT returns a free task tag; the caller holds mu.
func (c *conn) allocITT() uint32 {
	for {
		c.nextITT++
		if c.nextITT == pdu.ReservedTag || c.nextITT == 0 {
			c.nextITT = 1
		}
		if _, used := c.tasks[c.nextITT]; !used && c.nextITT != c.pingITT {
			return c.nextITT
		}
	}
}

// cmd is one SCSI command to run.
type cmd struct {
	cdb   scsi.CDB
	lun   uint64
	read  []byte // Data-In destination; its length is the expected length
	write []byte // Data-Out source
}

// sendState says how far a command got before its connection died.
type sendState int

const (
	notSent sendState = iota
	maybeSent
)

// execError is an error from exec with how far the command got.
type execError struct {
	state sendState
	err   error
}

func (e *execError) Error() string { return e.err.Error() }
func (e *execError) Unwrap() error { return e.err }

// exec runs a SCSI command on this connection and returns its task once
// the target answered. On failure it tells whether the command may have
// reached the target.
func (c *conn) exec(ctx context.Context, cm *cmd) (*task, error) {
	t := &task{op: cm.cdb[0], lun: cm.lun, buf: cm.read, done: make(chan struct{})}
	if len(cm.write) > 0 {
		t.r2t = make(chan *pdu.R2T, 4)
	}
	p := c.params
	if err := ctx.Err(); err != nil {
		return nil, &execError{notSent, err}
	}
	// Wait for room in the command window and the queue.
	c.lockW()
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			_ = c.unlockW()
			return nil, &execError{notSent, err}
		}
		if c.win.open() && c.inflight < c.cfg.QueueDepth {
			break
		}
		ch := c.winCh
		c.winWait++
		c.mu.Unlock()
		_ = c.unlockW()
		var err error
		select {
		case <-ch:
		case <-c.dead:
		case <-ctx.Done():
			err = ctx.Err()
		}
		c.mu.Lock()
		c.winWait--
		c.mu.Unlock()
		if err != nil {
			return nil, &execError{notSent, err}
		}
		c.lockW()
	}
	t.itt = c.allocITT()
	t.cmdSN = c.win.take()
	t.deadline = c.clk.Now().Add(c.cfg.CommandTimeout)
	c.tasks[t.itt] = t
	c.inflight++
	c.commands++
	if c.inflight > c.peak {
		c.peak = c.inflight
	}
	expStatSN := c.win.expStatSN
	c.mu.Unlock()

	total := len(cm.write)
	imm, unsolEnd := 0, 0
	if total > 0 {
		if p.ImmediateData {
			imm = min(total, p.FirstBurstLength, p.MaxXmitDataSegment)
		}
		unsolEnd = imm
		if !p.InitialR2T {
			unsolEnd = min(total, p.FirstBurstLength)
		}
	}
	sc := pdu.SCSICommand{Final: unsolEnd == imm, Read: cm.read != nil, Write: total > 0, Attr: pdu.AttrSimple,
		LUN: scsi.EncodeLUN(cm.lun), ITT: t.itt, CmdSN: t.cmdSN, ExpStatSN: expStatSN, CDB: cm.cdb}
	if total > 0 {
		sc.ExpectedLen = uint32(total)
	} else {
		sc.ExpectedLen = uint32(len(cm.read))
	}
	var h pdu.BHS
	sc.Encode(&h)
	err := c.queuePDU(&h, cm.write[:imm])
	if err == nil && unsolEnd > imm {
		_ = c.sendDataLocked(t, cm.write, imm, unsolEnd-imm, pdu.ReservedTag)
	}
	// A write error fails the connection; wait then reports the command
	// as maybe sent.
	_ = c.unlockW()
	return c.wait(ctx, t, cm)
}

// sendDataLocked sends write[off:off+n] as Data-Out PDUs of at most the
// target's segment size; the caller holds the write side.
func (c *conn) sendDataLocked(t *task, write []byte, off, n int, ttt uint32) error {
	seg := c.params.MaxXmitDataSegment
	var dataSN uint32
	for end := off + n; off < end; dataSN++ {
		l := min(seg, end-off)
		c.mu.Lock()
		exp := c.win.expStatSN
		c.mu.Unlock()
		d := pdu.DataOut{Final: off+l == end, LUN: scsi.EncodeLUN(t.lun), ITT: t.itt, TTT: ttt,
			ExpStatSN: exp, DataSN: dataSN, BufferOffset: uint32(off)}
		var h pdu.BHS
		d.Encode(&h)
		if err := c.queuePDU(&h, write[off:off+l]); err != nil {
			return err
		}
		off += l
	}
	return nil
}

// wait serves R2Ts for t until the target answers, the connection dies or
// ctx ends (then the task is aborted).
func (c *conn) wait(ctx context.Context, t *task, cm *cmd) (*task, error) {
	for {
		select {
		case <-t.done:
			return t, t.err
		case r := <-t.r2t:
			off, n := int(r.BufferOffset), int(r.DesiredLength)
			if n == 0 || off < 0 || off+n > len(cm.write) || n > c.params.MaxBurstLength {
				c.fail(fmt.Errorf("%w: R2T for %d bytes at %d of a %d-byte write", ErrProtocol, n, off, len(cm.write)))
				continue
			}
			c.lockW()
			_ = c.sendDataLocked(t, cm.write, off, n, r.TTT)
			_ = c.unlockW()
		case <-c.dead:
			if c.answered(t) {
				return t, t.err
			}
			c.forget(t)
			return nil, &execError{maybeSent, c.deadErr()}
		case <-ctx.Done():
			if c.answered(t) {
				return t, t.err
			}
			return nil, &execError{maybeSent, c.abort(t, ctx.Err())}
		}
	}
}

// answered reports whether the target's answer to t is in. The reader
// takes an answered task out of the tasks at once but wakes its caller
// only when it runs out of input or stops, so a caller that sees the
// connection die or its context end may find its answer read and not
// yet handed over; it then waits for the reader to hand it over.
func (c *conn) answered(t *task) bool {
	c.mu.Lock()
	waiting := c.tasks[t.itt] == t
	c.mu.Unlock()
	if waiting {
		return false
	}
	select {
	case <-t.done:
		return true
	case <-c.readerDone:
		// The reader delivers everything it read before it stops.
		select {
		case <-t.done:
			return true
		default:
			return false
		}
	}
}

// forget removes t so the reader no longer writes into its buffer.
func (c *conn) forget(t *task) {
	c.mu.Lock()
	if c.tasks[t.itt] == t {
		delete(c.tasks, t.itt)
		if t.op != nonSCSI {
			// A queue slot opened: wake commands waiting for one.
			c.inflight--
			c.wakeWindowLocked()
		}
	}
	c.mu.Unlock()
	t.mu.Lock()
	t.gone = true
	t.mu.Unlock()
}

func (c *conn) countAbort() {
	if c.onAbort != nil {
		c.onAbort()
	}
}

// abort asks the target to abort t; when the target does not confirm in
// time the connection is dropped, which ends the task as well.
func (c *conn) abort(t *task, cause error) error {
	c.log.Warn("aborting task", "itt", t.itt, "op", t.op, "cause", cause)
	c.countAbort()
	_, err := c.taskMgmt(pdu.TMFAbortTask, t.lun, t.itt, t.cmdSN)
	if err != nil {
		c.fail(fmt.Errorf("%w: abort of task 0x%x failed: %w", errConnLost, t.itt, err))
	}
	c.forget(t)
	return fmt.Errorf("%w: %w", ErrTaskAborted, cause)
}

// taskMgmt sends a task management request and waits AbortTimeout for the
// answer.
func (c *conn) taskMgmt(fn byte, lun uint64, ref, refCmdSN uint32) (byte, error) {
	t := &task{op: nonSCSI, done: make(chan struct{})}
	c.lockW()
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		_ = c.unlockW()
		return 0, err
	}
	t.itt = c.allocITT()
	c.tasks[t.itt] = t
	req := pdu.TaskMgmtRequest{Function: fn, LUN: scsi.EncodeLUN(lun), ITT: t.itt, RefTag: ref,
		CmdSN: c.win.cmdSN, ExpStatSN: c.win.expStatSN, RefCmdSN: refCmdSN}
	if fn != pdu.TMFAbortTask {
		req.RefTag = pdu.ReservedTag
	}
	c.mu.Unlock()
	var h pdu.BHS
	req.Encode(&h)
	_ = c.queuePDU(&h, nil)
	if err := c.unlockW(); err != nil {
		c.forget(t)
		return 0, err
	}
	timer := c.clk.NewTimer(c.cfg.AbortTimeout)
	defer timer.Stop()
	select {
	case <-t.done:
		return t.tmfResp, nil
	case <-c.dead:
		c.forget(t)
		return 0, c.deadErr()
	case <-timer.C():
		c.forget(t)
		return 0, fmt.Errorf("iscsi: no task management response within %v", c.cfg.AbortTimeout)
	}
}

// logout closes the session politely; errors are only logged by callers.
func (c *conn) logout() error {
	t := &task{op: nonSCSI, done: make(chan struct{})}
	c.lockW()
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		_ = c.unlockW()
		return err
	}
	t.itt = c.allocITT()
	c.tasks[t.itt] = t
	req := pdu.LogoutRequest{Reason: pdu.LogoutSession, ITT: t.itt, CmdSN: c.win.cmdSN, ExpStatSN: c.win.expStatSN}
	c.mu.Unlock()
	var h pdu.BHS
	req.Encode(&h)
	_ = c.queuePDU(&h, nil)
	if err := c.unlockW(); err != nil {
		return err
	}
	timer := c.clk.NewTimer(c.cfg.AbortTimeout)
	defer timer.Stop()
	answered := func() error {
		if t.response != 0 {
			return fmt.Errorf("iscsi: logout response 0x%02x", t.response)
		}
		return nil
	}
	select {
	case <-t.done:
		return answered()
	case <-c.dead:
		// The target closes the connection right after its Logout
		// Response (RFC 7143, section 11.15); the reader hands over the
		// answers it read before it marks the connection dead, so both
		// cases can be ready here and select picks either.
		select {
		case <-t.done:
			return answered()
		default:
		}
		return c.deadErr()
	case <-timer.C():
		return fmt.Errorf("iscsi: no logout response within %v", c.cfg.AbortTimeout)
	}
}
