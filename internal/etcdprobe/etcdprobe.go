// Package etcdprobe says at once why an etcd endpoint cannot be used,
// before an etcd client would wait out its dial or request timeout and
// report only "context deadline exceeded".
//
// Check dials each endpoint, and does the TLS handshake the etcd client
// would do, then sends the HTTP/2 client preface (what gRPC sends first)
// and waits briefly for the server's answer: a server that refuses the
// client's certificate says so in a TLS alert at that point (TLS 1.3
// checks client certificates after the client's side of the handshake).
//
//	if err := etcdprobe.Check(ctx, endpoints, tlsConfig); errors.Is(err, etcdprobe.ErrTLS) {
//		return err // "tls: certificate required", "x509: certificate signed by unknown authority", ...
//	}
package etcdprobe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

var (
	// ErrTLS: the TLS handshake with the endpoint failed, or the server
	// refused this client's certificate (or its lack of one). Retrying
	// with the same certificates cannot help.
	ErrTLS = errors.New("etcd TLS failure")
	// ErrTLSRequired: the endpoint speaks TLS and the client has no TLS
	// configuration. Not retriable without certificates.
	ErrTLSRequired = errors.New("etcd endpoint requires TLS")
	// ErrUnreachable: no TCP connection to the endpoint. A retry may help
	// (the member may be starting).
	ErrUnreachable = errors.New("etcd endpoint unreachable")
)

// Timeout bounds each step of a probe (dial, handshake, answer).
const Timeout = 2 * time.Second

// http2Preface is the HTTP/2 connection preface and an empty SETTINGS
// frame (RFC 9113 section 3.4): what a gRPC client sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// Check probes every endpoint ("host:port", "https://host:port" or
// "http://host:port") with tc (nil: plaintext). It returns nil as soon as
// one endpoint takes the connection as the etcd client would make it, and
// otherwise the first endpoint's error, wrapping ErrTLS, ErrTLSRequired or
// ErrUnreachable. It takes at most about 3 x Timeout per endpoint.
func Check(ctx context.Context, endpoints []string, tc *tls.Config) error {
	var first error
	for _, ep := range endpoints {
		err := checkOne(ctx, ep, tc)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return fmt.Errorf("%w: no endpoints", ErrUnreachable)
	}
	return first
}

func hostPort(ep string) string {
	if strings.Contains(ep, "://") {
		if u, err := url.Parse(ep); err == nil {
			return u.Host
		}
	}
	return ep
}

func checkOne(ctx context.Context, ep string, tc *tls.Config) error {
	addr := hostPort(ep)
	d := net.Dialer{Timeout: Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, addr, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	conn.SetDeadline(deadline)
	if tc == nil {
		// Does it speak TLS? A plaintext etcd answers a ClientHello with
		// garbage or a closed connection; a TLS one with a ServerHello.
		probe := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // only asks whether the peer speaks TLS
		if err := probe.Handshake(); err == nil || isTLSAlert(err) {
			return fmt.Errorf("%w: %s answers with TLS but this client has no certificates", ErrTLSRequired, addr)
		}
		return nil
	}
	cfg := tc.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"h2"}
	tconn := tls.Client(conn, cfg)
	if err := tconn.Handshake(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrTLS, addr, err)
	}
	if _, err := tconn.Write([]byte(http2Preface)); err != nil {
		if isTLSAlert(err) {
			return fmt.Errorf("%w: %s: %v", ErrTLS, addr, err)
		}
		return nil
	}
	// The server's first frame, or its verdict on our certificate.
	buf := make([]byte, 1)
	if _, err := tconn.Read(buf); err != nil && isTLSAlert(err) {
		return fmt.Errorf("%w: %s refused this client: %v", ErrTLS, addr, err)
	}
	return nil
}

// isTLSAlert says whether err is a TLS alert from the peer (or a local
// TLS record error), as opposed to a timeout or a closed connection.
func isTLSAlert(err error) bool {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return true
	}
	var re tls.RecordHeaderError
	if errors.As(err, &re) {
		return false
	}
	return strings.Contains(err.Error(), "tls: ")
}
