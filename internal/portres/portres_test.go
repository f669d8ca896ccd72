package portres

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func listenReusePort(addr string) (net.Listener, error) {
	return Listen(context.Background(), addr, true)
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

// TestServerServesWhileReserved: a reservation kept for as long as the
// server lives (a test that restarts a process on the same ports) takes
// no connection from it, and a restarted server binds the port again.
func TestServerServesWhileReserved(t *testing.T) {
	r, err := Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	for round := range 2 {
		srv, err := Listen(context.Background(), r.Addr(), true)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		go func() {
			for {
				c, err := srv.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("x"))
				c.Close()
			}
		}()
		for i := range 20 {
			c, err := net.Dial("tcp", r.Addr())
			if err != nil {
				t.Fatalf("round %d dial %d: %v", round, i, err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 1)
			if _, err := c.Read(b); err != nil {
				t.Fatalf("round %d dial %d: no answer from the server: %v", round, i, err)
			}
			c.Close()
		}
		srv.Close()
	}
	if l, err := Listen(context.Background(), r.Addr(), false); err == nil {
		l.Close()
		t.Fatal("a listener without SO_REUSEPORT took the reserved port")
	}
}
