package web

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/web/session"
)

// Access log formats (the NCSA common and combined formats, as Apache httpd
// and nginx write them).
const (
	LogCommon   = "common"
	LogCombined = "combined"
)

// Config configures a node's web tier.
type Config struct {
	// Addr is the host:port the node serves HTTP on. Default
	// 127.0.0.1:8080.
	Addr string
	// TLSCertFile and TLSKeyFile, both set, turn on TLS 1.2 and 1.3 (and
	// with it HTTP/2, negotiated by ALPN), with Go's cipher choice and
	// session tickets. PEM files, loaded by NewServer. An ECDSA P-256
	// key makes each full handshake far cheaper than an RSA one; on
	// kept-alive connections the key type does not matter.
	TLSCertFile string
	TLSKeyFile  string
	// H2C also serves HTTP/2 over cleartext to clients that speak it with
	// prior knowledge (RFC 9113 section 3.3), for a TLS-terminating proxy
	// in front or a benchmark. Default false.
	H2C bool
	// LoopbackSendBuffer is the socket send buffer in bytes (SO_SNDBUF,
	// socket(7); the kernel doubles it) of connections from a loopback
	// address: a TLS-terminating proxy or a client on the same machine.
	// Their round trip is microseconds, and a bounded buffer keeps what
	// is sent in the processor's cache until the reader copies it: Linux
	// starts a loopback connection's buffer at 4 MiB, so a 1 MiB answer
	// is copied whole into the kernel before the reader takes any.
	// Connections from other addresses keep the kernel's autotuning
	// (tcp_wmem, tcp(7)), which a long round trip needs. 0 leaves every
	// connection to the kernel; at most 64 MiB. Default 256 KiB.
	LoopbackSendBuffer int
	// WriteBehind is how many bytes a connection may have accepted from
	// the server and not yet written to its socket: its writes are queued
	// and written from a goroutine of its own, all that gathered at once,
	// while the server goes on (net/http writes an answer in pieces: a
	// system call for about every HTTP/2 frame under load, two or three
	// for a 16 KiB HTTP/1.1 answer). A write of at least this many bytes
	// to a connection with nothing queued is written at once. 0 writes
	// every piece from the serving goroutine; at most 64 MiB. Default
	// 64 KiB.
	WriteBehind int
	// SendTimeout closes a connection whose peer takes nothing of what
	// it is sent for this long: each write to the socket, of at most
	// 256 KiB, must end within it (nginx's send_timeout, whose default it
	// shares). A large answer to a slow client that keeps reading goes
	// on, unlike under net/http's WriteTimeout, which bounds the whole
	// answer; a peer that stops reading gives back its goroutines and
	// queued bytes. 0: none (such a peer holds them until it goes). At
	// most 1h. Default 60s.
	SendTimeout time.Duration
	// ContentRoot is the directory of the store served as the site. The
	// sessions' directories (Layout) must lie outside it. Default "site".
	ContentRoot string
	// ContentCache sizes the cache of whole small files the site is
	// served from (checked against a stat of the file at every request).
	// Default 64 MiB in all, files up to 1 MiB; Bytes 0 turns it off.
	ContentCache ContentCache
	// Layout places sessions and idempotency keys in the store. Default
	// session.DefaultLayout().
	Layout session.Layout
	// BodyLimit bounds a request body in bytes; a larger one is answered
	// 413 and nothing is stored. Default 64 KiB.
	BodyLimit int64
	// MaxSessionBytes bounds a session's encoded size in bytes (413 for an
	// operation that would exceed it). Default 1 MiB.
	MaxSessionBytes int
	// KeyRetention is how long an idempotency key's stored answer is kept
	// after the request finished; then it is collected and the key may be
	// used anew (draft-ietf-httpapi-idempotency-key-header-07 section 2.3).
	// Default 24h.
	KeyRetention time.Duration
	// CollectInterval is how often finished keys older than KeyRetention
	// are collected. Default 10m.
	CollectInterval time.Duration
	// RecoveryWait bounds how long a mutating request waits for a dead
	// node's recovery (its key "in progress" under a dead owner, or the
	// key's or session's lock still the dead node's, with a store that can
	// bound that wait: RecoveryBounder) before it is answered 503 with
	// Retry-After; nothing is journaled then, and the retry with the same
	// key is safe. Default 2s.
	RecoveryWait time.Duration
	// RequestTimeout bounds the store work of one request. Default 10s.
	RequestTimeout time.Duration
	// AllowOrigins lists the origins ("http://127.0.0.1:8080") whose pages
	// may call the sessions API across origins (CORS); "*" allows any.
	// Default none.
	AllowOrigins []string
	// SeedDir, when set, is a local directory copied into ContentRoot when
	// ContentRoot is empty (a site loaded on the first start), in the
	// background once the node serves.
	SeedDir string
	// AccessLog is "" (none), or the file the access log is appended to;
	// "-" is standard output.
	AccessLog string
	// AccessLogFormat is LogCommon or LogCombined. Default LogCombined.
	AccessLogFormat string
	// Middleware, when set, wraps the tier's whole handler, outside the
	// access log (the node's request metrics).
	Middleware func(http.Handler) http.Handler
	// ShutdownTimeout bounds Close: requests still running then are cut.
	// Default 5s.
	ShutdownTimeout time.Duration

	// Logger receives the tier's log lines. Default a null logger.
	Logger hclog.Logger
	// Clock is the time source. Default the wall clock.
	Clock clock.Clock
	// Failpoint, when set, is called at each Point of a mutating request's
	// path; tests make it kill the node there.
	Failpoint func(Point)
}

// DefaultConfig returns the defaults described on Config.
func DefaultConfig() Config {
	return Config{
		Addr:               "127.0.0.1:8080",
		ContentRoot:        "site",
		ContentCache:       ContentCache{Bytes: 64 << 20, MaxFile: 1 << 20},
		LoopbackSendBuffer: 256 << 10,
		WriteBehind:        64 << 10,
		SendTimeout:        60 * time.Second,
		Layout:             session.DefaultLayout(),
		BodyLimit:          64 << 10,
		MaxSessionBytes:    1 << 20,
		KeyRetention:       24 * time.Hour,
		CollectInterval:    10 * time.Minute,
		RecoveryWait:       2 * time.Second,
		RequestTimeout:     10 * time.Second,
		AccessLogFormat:    LogCombined,
		ShutdownTimeout:    5 * time.Second,
	}
}

// ErrConfig reports an invalid configuration field (the message names it);
// the same configuration fails again, so retrying is pointless.
var ErrConfig = errors.New("web: invalid config")

// Validate checks the fields, alone and against each other, and names the
// first wrong one.
func (c Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("%w: %s %s", ErrConfig, field, why) }
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return bad("Addr", "must be host:port: "+err.Error())
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return bad("TLSCertFile", "and TLSKeyFile must be set together")
	}
	if c.ContentRoot == "" {
		return bad("ContentRoot", "must name a directory of the store (\".\" is the whole store and would expose the sessions)")
	}
	if c.LoopbackSendBuffer < 0 || c.LoopbackSendBuffer > 64<<20 {
		return bad("LoopbackSendBuffer", "must be 0 (the kernel's sizing) or at most 64 MiB")
	}
	if c.WriteBehind < 0 || c.WriteBehind > 64<<20 {
		return bad("WriteBehind", "must be 0 (no queue) or at most 64 MiB")
	}
	if c.SendTimeout < 0 || c.SendTimeout > time.Hour {
		return bad("SendTimeout", "must be 0 (none) or at most 1h")
	}
	if c.ContentCache.Bytes < 0 || c.ContentCache.Bytes > 0 && c.ContentCache.MaxFile <= 0 {
		return bad("ContentCache", "Bytes must be at least 0, and MaxFile positive when Bytes is")
	}
	for _, d := range []struct{ name, dir string }{{"Layout.Sessions", c.Layout.Sessions}, {"Layout.Keys", c.Layout.Keys}} {
		if d.dir == "" {
			return bad(d.name, "must be set")
		}
		if within(d.dir, c.ContentRoot) {
			return bad(d.name, "lies inside ContentRoot "+c.ContentRoot+": sessions would be served as content")
		}
	}
	if c.Layout.Sessions == c.Layout.Keys {
		return bad("Layout.Keys", "must differ from Layout.Sessions")
	}
	if c.BodyLimit < 256 {
		return bad("BodyLimit", "must be at least 256 bytes")
	}
	if c.MaxSessionBytes < 256 {
		return bad("MaxSessionBytes", "must be at least 256 bytes")
	}
	if c.KeyRetention < time.Minute {
		return bad("KeyRetention", "must be at least 1m (clients retry within it)")
	}
	if c.CollectInterval <= 0 || c.CollectInterval > c.KeyRetention {
		return bad("CollectInterval", "must be positive and at most KeyRetention")
	}
	if c.RecoveryWait < 0 || c.RecoveryWait >= c.RequestTimeout {
		return bad("RecoveryWait", "must be at least 0 and less than RequestTimeout")
	}
	if c.RequestTimeout <= 0 {
		return bad("RequestTimeout", "must be positive")
	}
	if c.AccessLogFormat != LogCommon && c.AccessLogFormat != LogCombined {
		return bad("AccessLogFormat", `must be "common" or "combined"`)
	}
	for _, o := range c.AllowOrigins {
		if !validOrigin(o) {
			return bad("AllowOrigins", fmt.Sprintf("%q is not an origin such as http://127.0.0.1:8080", o))
		}
	}
	if c.ShutdownTimeout <= 0 {
		return bad("ShutdownTimeout", "must be positive")
	}
	return nil
}

// within reports whether dir is root or lies below it (slash paths relative
// to the store's root).
func within(dir, root string) bool {
	if root == "." {
		return true
	}
	return dir == root || len(dir) > len(root) && dir[:len(root)] == root && dir[len(root)] == '/'
}

func (c Config) clockNow() func() time.Time {
	if c.Clock == nil {
		return time.Now
	}
	return c.Clock.Now
}
