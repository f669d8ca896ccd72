package portres

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func listenReusePort(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

// TestReservationKeepsOthersOut: while a port is reserved, a plain bind of
// it fails; a server that sets SO_REUSEPORT binds it, keeps it after the
// release, and gets every connection.
func TestReservationKeepsOthersOut(t *testing.T) {
	r, err := Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if r.Port() == 0 {
		t.Fatal("no port reserved")
	}
	if l, err := net.Listen("tcp", r.Addr()); err == nil {
		l.Close()
		t.Fatal("a plain listener took the reserved port")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("plain listener: %v", err)
	}
	srv, err := listenReusePort(r.Addr())
	if err != nil {
		t.Fatalf("the server could not bind the reserved port: %v", err)
	}
	defer srv.Close()
	r.Release()
	r.Release()
	done := make(chan error, 1)
	go func() {
		c, err := srv.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := Reserve("not-an-ip"); err == nil {
		t.Fatal("a host name was accepted")
	}
}
