package iscsi

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// pattern returns n buffers of varied sizes and their concatenation.
func pattern(n int) (net.Buffers, []byte) {
	var bufs net.Buffers
	var all bytes.Buffer
	for i := 0; i < n; i++ {
		b := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 1+i%700)
		if i%97 == 0 {
			b = nil // empty buffers are skipped
		}
		bufs = append(bufs, b)
		all.Write(b)
	}
	return bufs, all.Bytes()
}

// TestSockIOWritesEverythingInOrder writes more buffers than one writev
// takes, and more bytes than the socket holds, while the peer reads
// slowly: every byte arrives, in order.
func TestSockIOWritesEverythingInOrder(t *testing.T) {
	a, b := tcpPair(t)
	s := newSockIO(a)
	if s.rc == nil {
		t.Fatal("a TCP connection should use raw system calls")
	}
	bufs, want := pattern(3 * maxIOV)
	for len(want) < 8<<20 {
		more, w := pattern(2 * maxIOV)
		bufs, want = append(bufs, more...), append(want, w...)
	}
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		p := make([]byte, 64<<10)
		for buf.Len() < len(want) {
			time.Sleep(time.Millisecond) // a slow reader fills the socket
			n, err := b.Read(p)
			buf.Write(p[:n])
			if err != nil {
				break
			}
		}
		got <- buf.Bytes()
	}()
	if err := s.WriteBuffers(bufs); err != nil {
		t.Fatal(err)
	}
	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("received %d bytes, not the %d written in order", len(g), len(want))
	}
}

// TestSockIOTryWriteStopsWhenFull checks that TryWriteBuffers never waits:
// against a peer that does not read it returns what did not fit, and
// that rest completes the stream.
func TestSockIOTryWriteStopsWhenFull(t *testing.T) {
	a, b := tcpPair(t)
	s := newSockIO(a)
	chunk := bytes.Repeat([]byte("shoal"), 1<<20/5)
	var bufs net.Buffers
	var want []byte
	for i := 0; i < 32; i++ {
		bufs = append(bufs, chunk)
		want = append(want, chunk...)
	}
	done := make(chan struct{})
	var rest net.Buffers
	var err error
	go func() {
		defer close(done)
		rest, err = s.TryWriteBuffers(bufs)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TryWriteBuffers waited for a peer that does not read")
	}
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	for _, r := range rest {
		left += len(r)
	}
	if left == 0 || left == len(want) {
		t.Fatalf("%d of %d bytes left: expected a partial write", left, len(want))
	}
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(want))
		n, _ := io.ReadFull(b, buf)
		got <- buf[:n]
	}()
	if err := s.WriteBuffers(rest); err != nil {
		t.Fatal(err)
	}
	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("received %d bytes, not the %d written", len(g), len(want))
	}
}

// TestSockIOReadEndsAndErrors checks Read returns data, then io.EOF when
// the peer closes, honours a deadline, and fails once closed locally.
func TestSockIOReadEndsAndErrors(t *testing.T) {
	a, b := tcpPair(t)
	s := newSockIO(a)
	if _, err := b.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 16)
	n, err := io.ReadAtLeast(s, p, 5)
	if err != nil || string(p[:n]) != "hello" {
		t.Fatalf("read %q, %v", p[:n], err)
	}
	_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s.Read(p); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	_ = a.SetReadDeadline(time.Time{})
	b.Close()
	if _, err := s.Read(p); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed: %v, want EOF", err)
	}
	a.Close()
	if _, err := s.Read(p); err == nil {
		t.Fatal("read on a closed connection succeeded")
	}
	if err := s.WriteBuffers(net.Buffers{[]byte("x")}); err == nil {
		t.Fatal("write on a closed connection succeeded")
	}
}
