package iscsi

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
)

// Config holds the initiator's settings. Start from DefaultConfig and set
// the target fields.
type Config struct {
	// Portal is the target's host:port.
	Portal string
	// Target is the target's iSCSI name; empty for a discovery session.
	Target string
	// LUN is the logical unit the device reads and writes.
	LUN uint64
	// InitiatorName is this initiator's iSCSI name. It and ISID name the
	// I_T nexus that owns reservation registrations.
	InitiatorName string
	// ISID is the 6-byte initiator session ID. Zero picks a random one
	// per Config (kept across reconnects so the target reinstates the
	// session instead of keeping a stale twin).
	ISID [6]byte

	// CHAP: when User is set the initiator offers CHAP. TargetUser and
	// TargetSecret, when set, ask the target to prove itself (mutual).
	User, Secret             string
	TargetUser, TargetSecret string

	// HeaderDigest and DataDigest offer CRC32C for the header or data
	// digests (the target may decline; then None is used).
	HeaderDigest, DataDigest bool

	// MaxRecvDataSegmentLength is the largest data segment this
	// initiator accepts in one PDU, in bytes (512..16777215).
	MaxRecvDataSegmentLength int
	// MaxBurstLength and FirstBurstLength offer the burst sizes in bytes
	// (FirstBurstLength <= MaxBurstLength).
	MaxBurstLength, FirstBurstLength int
	// InitialR2T and ImmediateData are the offers for unsolicited data.
	// InitialR2T=false with ImmediateData=true sends the most unsolicited
	// data the target allows.
	InitialR2T, ImmediateData bool

	// CDB16 makes READ, WRITE and SYNCHRONIZE CACHE always use their
	// 16-byte forms; without it the 10-byte forms are used wherever they
	// can address the range (below 2^32 blocks, up to 65535 per command).
	CDB16 bool

	// QueueDepth bounds this initiator's commands in flight on the
	// connection (the target's MaxCmdSN window bounds it further).
	QueueDepth int
	// MaxTransfer is the largest single READ or WRITE in bytes; larger
	// device requests are split and issued concurrently.
	MaxTransfer int

	// DialTimeout bounds a TCP connect; LoginTimeout a whole login.
	DialTimeout, LoginTimeout time.Duration
	// CommandTimeout bounds one SCSI command; on expiry the initiator
	// aborts the task, and drops the connection if the abort does not
	// finish within AbortTimeout.
	CommandTimeout, AbortTimeout time.Duration
	// NopInterval is how often an idle connection is pinged with NOP-Out;
	// NopTimeout how long an answer may take before the connection is
	// declared dead. Zero NopInterval disables keepalive.
	NopInterval, NopTimeout time.Duration
	// ReconnectAttempts bounds logins tried after a dropped connection
	// before commands fail with ErrNotConnected (0 still tries once), and
	// how often an idempotent command is re-sent; ReconnectDelay is the
	// wait before the second attempt, doubled up to ReconnectMaxDelay.
	ReconnectAttempts                 int
	ReconnectDelay, ReconnectMaxDelay time.Duration
	// UnitAttentionRetries bounds how often a command that met a unit
	// attention (and so was not executed) is re-sent.
	UnitAttentionRetries int

	// ReadOnly opens the LU for reading only: WRITE and PERSISTENT
	// RESERVE OUT commands are refused here with an error matching
	// blockdev.ErrReadOnly and never sent, and Device.Flush sends
	// nothing (there is nothing of this initiator's to make durable).
	ReadOnly bool

	// Reregister, when set, is consulted before the initiator re-registers
	// its reservation key after a re-login; an error vetoes it (for
	// instance because the cluster recorded this node as fenced). Nil
	// re-registers unless this initiator already saw itself preempted.
	Reregister func(key uint64) error

	// Logger receives log lines; nil means hclog.NewNullLogger().
	Logger hclog.Logger
	// Clock drives timeouts and keepalive; nil means the wall clock.
	Clock clock.Clock
	// Dial opens the TCP connection; nil uses net.Dialer. Tests inject
	// connections they can cut.
	Dial DialFunc
}

// DefaultConfig returns settings that suit a LAN or loopback target.
func DefaultConfig() Config {
	return Config{
		InitiatorName:            "iqn.2026-01.io.shoal:initiator",
		MaxRecvDataSegmentLength: 256 << 10,
		MaxBurstLength:           1 << 20,
		FirstBurstLength:         256 << 10,
		InitialR2T:               false,
		ImmediateData:            true,
		QueueDepth:               64,
		MaxTransfer:              1 << 20,
		DialTimeout:              5 * time.Second,
		LoginTimeout:             10 * time.Second,
		CommandTimeout:           30 * time.Second,
		AbortTimeout:             5 * time.Second,
		NopInterval:              5 * time.Second,
		NopTimeout:               10 * time.Second,
		ReconnectAttempts:        5,
		ReconnectDelay:           100 * time.Millisecond,
		ReconnectMaxDelay:        2 * time.Second,
		UnitAttentionRetries:     5,
	}
}

// ErrConfig: a Config field is invalid; the message names it.
var ErrConfig = errors.New("iscsi: invalid config")

// Validate checks the fields and their relations.
func (c *Config) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrConfig}, a...)...) }
	switch {
	case c.Portal == "":
		return bad("Portal is empty")
	case c.InitiatorName == "":
		return bad("InitiatorName is empty")
	case c.MaxRecvDataSegmentLength < 512 || c.MaxRecvDataSegmentLength > 1<<24-1:
		return bad("MaxRecvDataSegmentLength %d outside 512..16777215", c.MaxRecvDataSegmentLength)
	case c.MaxBurstLength < 512 || c.MaxBurstLength > 1<<24-1:
		return bad("MaxBurstLength %d outside 512..16777215", c.MaxBurstLength)
	case c.FirstBurstLength < 512 || c.FirstBurstLength > c.MaxBurstLength:
		return bad("FirstBurstLength %d must be 512..MaxBurstLength (%d)", c.FirstBurstLength, c.MaxBurstLength)
	case c.QueueDepth < 1 || c.QueueDepth > 4096:
		return bad("QueueDepth %d outside 1..4096", c.QueueDepth)
	case c.MaxTransfer < 4096 || c.MaxTransfer%512 != 0:
		return bad("MaxTransfer %d must be a multiple of 512 and at least 4096", c.MaxTransfer)
	case c.DialTimeout <= 0 || c.LoginTimeout <= 0:
		return bad("DialTimeout and LoginTimeout must be positive")
	case c.CommandTimeout <= 0 || c.AbortTimeout <= 0:
		return bad("CommandTimeout and AbortTimeout must be positive")
	case c.NopInterval < 0 || (c.NopInterval > 0 && c.NopTimeout <= 0):
		return bad("NopTimeout must be positive when NopInterval is set")
	case c.ReconnectAttempts < 0:
		return bad("ReconnectAttempts %d is negative", c.ReconnectAttempts)
	case c.ReconnectAttempts > 0 && (c.ReconnectDelay <= 0 || c.ReconnectMaxDelay < c.ReconnectDelay):
		return bad("ReconnectDelay must be positive and at most ReconnectMaxDelay")
	case c.UnitAttentionRetries < 0:
		return bad("UnitAttentionRetries is negative")
	case (c.User == "") != (c.Secret == ""):
		return bad("User and Secret must be set together")
	case (c.TargetUser == "") != (c.TargetSecret == ""):
		return bad("TargetUser and TargetSecret must be set together")
	case c.TargetUser != "" && c.User == "":
		return bad("mutual CHAP (TargetUser) needs User and Secret too")
	case c.TargetSecret != "" && c.TargetSecret == c.Secret:
		return bad("TargetSecret must differ from Secret (RFC 7143 section 12.1.3)")
	}
	return nil
}

func (c *Config) logger() hclog.Logger {
	if c.Logger == nil {
		return hclog.NewNullLogger()
	}
	return c.Logger
}

func (c *Config) clock() clock.Clock {
	if c.Clock == nil {
		return clock.Real()
	}
	return c.Clock
}
