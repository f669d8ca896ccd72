package iscsi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/scsi"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Session is a logged-in iSCSI session to one target. It re-establishes a
// dropped connection by itself (session reinstatement with the same
// ISID, RFC 7143 ErrorRecoveryLevel 0), re-issues commands only where that
// is safe, and reports a write whose completion was lost as
// blockdev.ErrWriteOutcomeUnknown. Safe for concurrent use.
type Session struct {
	cfg  Config
	log  hclog.Logger
	clk  clock.Clock
	isid [6]byte

	mu           sync.Mutex
	conn         *conn
	closed       bool
	reconnecting chan struct{}
	reconnectErr error
	logins       int
	aborts       atomic.Uint64

	// Reservation state restored after a re-login.
	prKey        uint64
	prRegistered bool
	prReserved   bool
	prType       blockdev.ReservationType
	fenced       bool
}

// Dial connects to cfg.Portal and logs into cfg.Target.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Target == "" {
		return nil, fmt.Errorf("%w: Target is empty (use Discover for a discovery session)", ErrConfig)
	}
	s := &Session{cfg: cfg, log: cfg.logger(), clk: cfg.clock(), isid: cfg.ISID}
	if s.isid == [6]byte{} {
		// Type 0x80 (random) ISID, as RFC 7143 section 10.12.5 allows.
		_, _ = rand.Read(s.isid[1:])
		s.isid[0] = 0x80
	}
	c, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	s.conn = c
	s.logins = 1
	return s, nil
}

// connect dials, logs in and starts a connection.
func (s *Session) connect(ctx context.Context) (*conn, error) {
	nc, err := dial(ctx, &s.cfg)
	if err != nil {
		return nil, fmt.Errorf("iscsi: connect to %s: %w", s.cfg.Portal, err)
	}
	c := newConn(&s.cfg, nc, s.isid)
	if err := c.login(ctx, false); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("iscsi: login to %s at %s: %w", s.cfg.Target, s.cfg.Portal, err)
	}
	c.onAsync = func(ev *pdu.AsyncMessage, sense []byte) { s.async(c, ev, sense) }
	c.onAbort = func() { s.aborts.Add(1) }
	c.start()
	s.log.Debug("logged in", "target", s.cfg.Target, "portal", s.cfg.Portal, "tsih", c.tsih,
		"header_digest", c.params.HeaderDigest, "data_digest", c.params.DataDigest,
		"max_xmit", c.params.MaxXmitDataSegment, "max_burst", c.params.MaxBurstLength,
		"first_burst", c.params.FirstBurstLength, "initial_r2t", c.params.InitialR2T,
		"immediate_data", c.params.ImmediateData)
	return c, nil
}

func (s *Session) async(c *conn, ev *pdu.AsyncMessage, sense []byte) {
	switch ev.Event {
	case pdu.AsyncSCSIEvent:
		if sn, err := scsi.ParseSense(sense); err == nil {
			s.log.Info("target reports an event", "sense", sn.String())
			s.notePreempted(sn)
		}
	case pdu.AsyncRequestLogout:
		// Log out within Parameter3 seconds; the next command logs in again.
		go func() {
			_ = c.logout()
			c.fail(fmt.Errorf("%w: target asked for logout", errConnLost))
		}()
	case pdu.AsyncRequestNegotiate:
		s.log.Warn("target asks for renegotiation, which this initiator does not do; reconnecting")
		go c.fail(fmt.Errorf("%w: target asked for renegotiation", errConnLost))
	}
}

// Params returns the operational parameters of the current connection.
func (s *Session) Params() Params {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return Params{}
	}
	return s.conn.params
}

// Stats are counters of a session.
type Stats struct {
	// Logins counts successful logins, the first included.
	Logins int
	// Aborts counts ABORT TASK requests sent (RFC 7143, section 11.5.1)
	// for commands that ran past Config.CommandTimeout or whose caller
	// gave up, over every connection of the session.
	Aborts uint64
	// Commands counts SCSI commands sent on the current connection.
	Commands uint64
	// PeakInFlight is the most commands in flight at once on the
	// current connection.
	PeakInFlight int
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	c := s.conn
	st := Stats{Logins: s.logins, Aborts: s.aborts.Load()}
	s.mu.Unlock()
	if c != nil {
		c.mu.Lock()
		st.Commands, st.PeakInFlight = c.commands, c.peak
		c.mu.Unlock()
	}
	return st
}

// Logins counts successful logins, the first included.
func (s *Session) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// DropConnection closes the TCP connection without logging out, as a
// network fault would. The session reconnects on the next command. For
// tests and fault injection.
func (s *Session) DropConnection() {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.fail(fmt.Errorf("%w: dropped on request", errConnLost))
	}
}

// Close logs out and closes the connection. Commands still running fail.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	c := s.conn
	rc := s.reconnecting
	s.mu.Unlock()
	if rc != nil {
		<-rc
		s.mu.Lock()
		c = s.conn
		s.mu.Unlock()
	}
	var err error
	if c != nil {
		if c.deadErr() == nil {
			err = c.logout()
		}
		c.close(blockdev.ErrClosed)
	}
	return err
}

// connection returns a live connection, reconnecting if needed. A
// reconnect that logged in but whose connection was lost again before
// this caller could use it starts another one; after ReconnectAttempts
// such rounds the caller gets ErrNotConnected naming the last loss.
func (s *Session) connection(ctx context.Context) (*conn, error) {
	for round := 1; ; round++ {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, blockdev.ErrClosed
		}
		if c := s.conn; c != nil && c.deadErr() == nil {
			s.mu.Unlock()
			return c, nil
		}
		if s.reconnecting == nil {
			s.reconnecting = make(chan struct{})
			go s.reconnect(s.conn, s.reconnecting)
		}
		ch := s.reconnecting
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, blockdev.ErrClosed
		}
		c, err := s.conn, s.reconnectErr
		s.mu.Unlock()
		if c != nil && c.deadErr() == nil {
			return c, nil
		}
		if err != nil {
			return nil, notConnected(err)
		}
		// The reconnect succeeded and its connection is already gone.
		if round >= max(1, s.cfg.ReconnectAttempts) {
			lost := errConnLost
			if c != nil && c.deadErr() != nil {
				lost = c.deadErr()
			}
			return nil, notConnected(lost)
		}
	}
}

// reconnect replaces the dead connection old, trying a bounded number of
// logins with growing delays, and restores the reservation registration
// before any other command may use the new connection.
func (s *Session) reconnect(old *conn, done chan struct{}) {
	var cause error
	if old != nil {
		cause = old.deadErr()
		old.close(errConnLost)
	}
	s.log.Warn("connection lost, reconnecting", "target", s.cfg.Target, "cause", cause)
	delay := s.cfg.ReconnectDelay
	var err error
	var c *conn
	for attempt := 1; attempt <= max(1, s.cfg.ReconnectAttempts); attempt++ {
		if attempt > 1 {
			<-s.clk.After(delay)
			delay = min(2*delay, s.cfg.ReconnectMaxDelay)
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout+s.cfg.LoginTimeout)
		c, err = s.connect(ctx)
		if err == nil {
			err = s.restore(ctx, c)
			if err != nil {
				c.close(err)
				c = nil
			}
		}
		cancel()
		if err == nil {
			break
		}
		s.log.Warn("reconnect attempt failed", "attempt", attempt, "error", err)
		if errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrTargetNotFound) {
			break
		}
	}
	s.mu.Lock()
	if c != nil {
		if s.closed {
			s.mu.Unlock()
			c.close(blockdev.ErrClosed)
			s.mu.Lock()
		} else {
			s.conn = c
			s.logins++
		}
		s.reconnectErr = nil
		s.log.Info("reconnected", "target", s.cfg.Target, "logins", s.logins)
	} else {
		s.reconnectErr = err
	}
	s.reconnecting = nil
	s.mu.Unlock()
	close(done)
}

// restore runs on a fresh connection before it is published: it clears
// pending unit attentions and re-registers the reservation key, because
// a target such as tgtd ties registrations to the login session.
func (s *Session) restore(ctx context.Context, c *conn) error {
	for i := 0; i < 4; i++ {
		t, err := c.exec(ctx, &cmd{cdb: scsi.TestUnitReady(), lun: s.cfg.LUN})
		if err != nil {
			return err
		}
		if t.status == scsi.StatusGood {
			break
		}
		if e := s.statusErr(t); !errors.Is(e, ErrUnitAttention) {
			// Not ready or similar: leave it to the commands to report.
			break
		}
	}
	s.mu.Lock()
	key, reg, res, typ, fenced := s.prKey, s.prRegistered, s.prReserved, s.prType, s.fenced
	s.mu.Unlock()
	if !reg {
		return nil
	}
	if fenced {
		s.log.Warn("not re-registering the reservation key: this initiator was preempted", "key", fmt.Sprintf("%#x", key))
		return nil
	}
	if s.cfg.Reregister != nil {
		if err := s.cfg.Reregister(key); err != nil {
			s.log.Warn("re-registration vetoed", "key", fmt.Sprintf("%#x", key), "error", err)
			return nil
		}
	}
	cdb, param := scsi.PROut(scsi.PROutRegisterIgnore, 0, 0, key)
	t, err := c.exec(ctx, &cmd{cdb: cdb, lun: s.cfg.LUN, write: param})
	if err != nil {
		return err
	}
	if e := s.statusErr(t); e != nil {
		s.log.Warn("re-registration after login failed", "key", fmt.Sprintf("%#x", key), "error", e)
		return nil
	}
	s.log.Info("re-registered reservation key after login", "key", fmt.Sprintf("%#x", key))
	if res {
		cdb, param := scsi.PROut(scsi.PROutReserve, byte(typ), key, 0)
		t, err := c.exec(ctx, &cmd{cdb: cdb, lun: s.cfg.LUN, write: param})
		if err != nil {
			return err
		}
		if e := s.statusErr(t); e != nil {
			return s.takeOverReservation(ctx, c, key, typ, e)
		}
	}
	return nil
}

// takeOverReservation handles a reservation that the previous login's
// I_T nexus still holds with this session's own key (tgtd keeps it after
// the connection drops): a PREEMPT naming our own key moves it to the new
// nexus and removes the stale registration. A reservation held with any
// other key is left alone: someone else owns the LUN now.
func (s *Session) takeOverReservation(ctx context.Context, c *conn, key uint64, typ blockdev.ReservationType, cause error) error {
	buf := make([]byte, 64)
	t, err := c.exec(ctx, &cmd{cdb: scsi.PRIn(scsi.PRInReadReservation, uint16(len(buf))), lun: s.cfg.LUN, read: buf})
	if err != nil {
		return err
	}
	rd, perr := scsi.ParseReadReservation(buf)
	if e := s.statusErr(t); e != nil || perr != nil || !rd.Held || rd.Key != key {
		s.log.Warn("could not take the reservation again after login", "error", cause, "holder", fmt.Sprintf("%#x", rd.Key))
		s.mu.Lock()
		s.prReserved = false
		s.mu.Unlock()
		return nil
	}
	cdb, param := scsi.PROut(scsi.PROutPreempt, byte(typ), key, key)
	t, err = c.exec(ctx, &cmd{cdb: cdb, lun: s.cfg.LUN, write: param})
	if err != nil {
		return err
	}
	if e := s.statusErr(t); e != nil {
		s.log.Warn("could not move the reservation from the previous login", "error", e)
		return nil
	}
	s.log.Info("moved the reservation from the previous login to this one", "key", fmt.Sprintf("%#x", key))
	return nil
}

// statusErr turns a finished task's status into an error.
func (s *Session) statusErr(t *task) error {
	if t.status == scsi.StatusGood || t.status == scsi.StatusConditionMet {
		return nil
	}
	e := &SCSIError{Op: t.op, Status: t.status}
	if t.status == scsi.StatusCheckCondition && len(t.sense) > 0 {
		if sn, err := scsi.ParseSense(t.sense); err == nil {
			e.Sense, e.HasSense = sn, true
		}
	}
	return e
}

// notePreempted records that this initiator's registration was taken away
// (it must not re-register by itself after that).
func (s *Session) notePreempted(sn scsi.Sense) {
	if sn.Key == scsi.KeyUnitAttention && sn.ASC == 0x2a && (sn.ASCQ == 0x03 || sn.ASCQ == 0x05) {
		s.mu.Lock()
		if s.prRegistered && !s.fenced {
			s.fenced = true
			s.log.Warn("this initiator's reservation or registration was preempted")
		}
		s.mu.Unlock()
	}
}

// Fenced reports whether the session saw its registration preempted or a
// reservation conflict while registered.
func (s *Session) Fenced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fenced
}

// Result is a completed SCSI command.
type Result struct {
	// N is the number of bytes transferred into the read buffer.
	N int
}

// command kinds for retry decisions.
type safety int

const (
	// idempotent commands (reads, inquiries, cache flushes) are re-sent
	// after a lost connection.
	idempotent safety = iota
	// mutating commands (writes) are reported as outcome unknown when
	// their completion was lost.
	mutating
)

// run executes cm, retrying where the target did not execute it (unit
// attention, busy) or where re-sending is safe, and returns an error for
// any status but GOOD.
func (s *Session) run(ctx context.Context, cm *cmd, kind safety) (Result, error) {
	connRetries, uaRetries, busyRetries := 0, 0, 0
	busyDelay := 10 * time.Millisecond
	for {
		c, err := s.connection(ctx)
		if err != nil {
			return Result{}, err
		}
		t, err := c.exec(ctx, cm)
		if err != nil {
			var ee *execError
			if !errors.As(err, &ee) {
				// The target rejected it (not executed), failed it or it
				// was aborted after a timeout (outcome unknown).
				if kind == mutating && !errors.Is(err, ErrRejected) {
					return Result{}, outcomeUnknown(cm.cdb[0], err)
				}
				if kind == idempotent && errors.Is(err, ErrTaskAborted) && connRetries < max(1, s.cfg.ReconnectAttempts) {
					connRetries++
					continue
				}
				return Result{}, err
			}
			if ee.state == maybeSent && kind == mutating {
				return Result{}, outcomeUnknown(cm.cdb[0], ee.err)
			}
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			connRetries++
			if connRetries > max(1, s.cfg.ReconnectAttempts) {
				return Result{}, notConnected(ee.err)
			}
			s.log.Debug("re-issuing command after connection loss", "op", cm.cdb[0], "sent", ee.state == maybeSent)
			continue
		}
		serr := s.statusErr(t)
		if serr == nil {
			if len(cm.write) > 0 && t.under && t.residual > 0 {
				// The target took fewer bytes than the command carried.
				err := fmt.Errorf("%w: target reports %d of %d bytes not transferred", ErrProtocol, t.residual, len(cm.write))
				if kind == mutating {
					return Result{}, outcomeUnknown(cm.cdb[0], err)
				}
				return Result{}, err
			}
			// What arrived, less any residual the target reported.
			n := min(t.got, len(cm.read))
			if t.under && int(t.residual) <= len(cm.read) {
				n = min(n, len(cm.read)-int(t.residual))
			}
			return Result{N: n}, nil
		}
		var se *SCSIError
		errors.As(serr, &se)
		switch {
		case errors.Is(serr, ErrUnitAttention):
			s.notePreempted(se.Sense)
			s.log.Info("unit attention", "op", cm.cdb[0], "sense", se.Sense.String())
			uaRetries++
			if uaRetries > s.cfg.UnitAttentionRetries {
				return Result{}, serr
			}
			continue
		case errors.Is(serr, ErrBusy):
			busyRetries++
			if busyRetries > 8 {
				return Result{}, serr
			}
			select {
			case <-s.clk.After(busyDelay):
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
			busyDelay *= 2
			continue
		case errors.Is(serr, blockdev.ErrReservationConflict):
			s.mu.Lock()
			if s.prRegistered && !s.fenced && cm.cdb[0] != scsi.OpPROut {
				s.fenced = true
				s.log.Warn("reservation conflict while registered: this initiator is fenced")
			}
			s.mu.Unlock()
		}
		return Result{}, serr
	}
}
