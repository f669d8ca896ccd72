// Package portres reserves TCP ports for servers that must be told their
// port before they bind it (an embedded etcd member's URLs, a child
// process's flags), without the race of picking a port by listening and
// closing: Reserve binds a socket to port 0 with SO_REUSEPORT and never
// listens on it, so the kernel keeps the port from every other socket
// except one of the same user that sets SO_REUSEPORT too (the server,
// told to: embed.Config.SocketOpts.ReusePort, etcd --socket-reuse-port).
// No connection is ever queued on the reservation, since it does not
// listen. Release it once the server listens.
//
//	r, err := portres.Reserve("127.0.0.1")
//	cfg.ListenClientUrls = ...r.Addr()...; cfg.SocketOpts.ReusePort = true
//	e, err := embed.StartEtcd(cfg) // binds the same port
//	r.Release()
package portres

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reservation holds a port until Release.
type Reservation struct {
	fd   int
	addr netip.AddrPort
}

// Reserve reserves a free port on host, an IPv4 or IPv6 address.
func Reserve(host string) (*Reservation, error) {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("portres: %q is not an IP address: %w", host, err)
	}
	family := unix.AF_INET
	if ip.Is6() && !ip.Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("portres: socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("portres: SO_REUSEPORT: %w", err)
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Addr: ip.Unmap().As4()}
	} else {
		sa = &unix.SockaddrInet6{Addr: ip.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("portres: bind %s:0: %w", host, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("portres: getsockname: %w", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return &Reservation{fd: fd, addr: netip.AddrPortFrom(ip, uint16(port))}, nil
}

// Addr is the reserved host:port.
func (r *Reservation) Addr() string { return r.addr.String() }

// Port is the reserved port.
func (r *Reservation) Port() int { return int(r.addr.Port()) }

// Release gives the port up; the server that bound it keeps it. Safe to
// call more than once.
func (r *Reservation) Release() {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// Listen listens on TCP addr; with reusePort it sets SO_REUSEPORT first,
// so it can take a port a Reservation (of the same user) holds. Errors are
// net.Listen's (EADDRINUSE when another socket without SO_REUSEPORT holds
// the port).
func Listen(ctx context.Context, addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("portres: SO_REUSEPORT: %w", serr)
			}
			return nil
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}
