package web

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// sendBufferOf is the kernel's SO_SNDBUF of c (of the TCP connection under
// a TLS one).
func sendBufferOf(t *testing.T, c net.Conn) int {
	t.Helper()
	for {
		u, ok := c.(interface{ NetConn() net.Conn }) // *tls.Conn, writeBehindConn
		if !ok {
			break
		}
		c = u.NetConn()
	}
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestLoopbackSendBuffer: a loopback client's connection gets the
// configured send buffer (which Linux doubles, socket(7)), over plain HTTP
// and over TLS; with 0 the server leaves the socket alone.
func TestLoopbackSendBuffer(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	for _, tc := range []struct {
		name string
		tls  bool
		n    int
	}{{"plain", false, 96 << 10}, {"tls", true, 96 << 10}, {"off", false, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.LoopbackSendBuffer = tc.n
			if tc.tls {
				cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
			}
			srv, err := NewHTTPServer(cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			if err != nil {
				t.Fatal(err)
			}
			if tc.n == 0 {
				if srv.ConnState != nil {
					t.Fatal("LoopbackSendBuffer 0 still sets a connection hook")
				}
				return
			}
			got := make(chan int, 1)
			set := srv.ConnState
			srv.ConnState = func(c net.Conn, st http.ConnState) {
				set(c, st)
				if st == http.StateNew {
					got <- sendBufferOf(t, c)
				}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			// As a node serves: under its write-behind queue.
			wl := Listener(cfg, ln)
			scheme, client := "http://", &http.Client{Timeout: 10 * time.Second}
			if tc.tls {
				scheme = "https://"
				client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
				go srv.ServeTLS(wl, "", "")
			} else {
				go srv.Serve(wl)
			}
			defer srv.Close()
			resp, err := client.Get(scheme + ln.Addr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if v := <-got; v != 2*tc.n {
				t.Fatalf("SO_SNDBUF %d, want %d", v, 2*tc.n)
			}
		})
	}
}

func TestLoopbackSendBufferBounds(t *testing.T) {
	for _, n := range []int{-1, 64<<20 + 1} {
		cfg := DefaultConfig()
		cfg.LoopbackSendBuffer = n
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("LoopbackSendBuffer %d: %v, want ErrConfig", n, err)
		}
	}
	for _, n := range []int{-1, 64<<20 + 1} {
		cfg := DefaultConfig()
		cfg.WriteBehind = n
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("WriteBehind %d: %v, want ErrConfig", n, err)
		}
	}
}
