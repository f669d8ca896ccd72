package iscsi

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sockIO reads and writes a connection's socket.
//
// On a TCP socket it issues read(2) and writev(2) as raw system calls and
// leaves only the waiting for readiness to the runtime's poller. The
// socket is non-blocking, so these calls never sleep; made through the
// ordinary path, every one of them hands its processor to the runtime's
// monitor, and on a machine where the target shares the cores, a call
// the kernel preempts has its processor taken away and given to another
// thread, which costs two thread wake-ups per command. For connections
// that are not sockets (test wrappers) it falls back to the net.Conn.
//
// One goroutine at a time reads (the connection's reader) and one at a
// time writes (whoever holds the writing flag); the state of each call
// lives here so that the callbacks handed to the poller are made once,
// not allocated per call.
type sockIO struct {
	nc net.Conn
	rc syscall.RawConn // nil: use nc

	// Read side.
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	// Write side.
	iov     []syscall.Iovec
	wwait   bool
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

func newSockIO(nc net.Conn) *sockIO {
	s := &sockIO{nc: nc}
	if tc, ok := nc.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			s.rc = rc
		}
	}
	s.readFn, s.writeFn = s.readRaw, s.writevRaw
	return s
}

// readRaw is the poller's callback for Read: false asks it to wait for
// input and call again.
func (s *sockIO) readRaw(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		if e == syscall.EINTR {
			continue
		}
		s.rn, s.rerrno = int(r), e
		return e != syscall.EAGAIN
	}
}

// writevRaw is the poller's callback for writev: false asks it to wait
// for room and call again (only when wwait is set).
func (s *sockIO) writevRaw(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iov[0])), uintptr(len(s.iov)))
		if e == syscall.EINTR {
			continue
		}
		if e == syscall.EAGAIN {
			s.wn, s.werrno = 0, 0
			return !s.wwait
		}
		s.wn, s.werrno = int(r), e
		return true
	}
}

// maxIOV is the most buffers one writev takes (IOV_MAX on Linux).
const maxIOV = 1024

// Read reads into p, waiting until some data arrives.
func (s *sockIO) Read(p []byte) (int, error) {
	if s.rc == nil || len(p) == 0 {
		return s.nc.Read(p)
	}
	s.rbuf = p
	err := s.rc.Read(s.readFn)
	s.rbuf = nil
	n, errno := s.rn, s.rerrno
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// WriteBuffers writes every byte of bufs, waiting for room in the socket
// as needed.
func (s *sockIO) WriteBuffers(bufs net.Buffers) error {
	if s.rc == nil {
		_, err := bufs.WriteTo(s.nc)
		return err
	}
	for len(bufs) > 0 {
		var err error
		if bufs, _, err = s.writev(bufs, true); err != nil {
			return err
		}
	}
	return nil
}

// TryWriteBuffers writes what the socket takes at once and returns the
// rest, which is all of bufs when the connection is not a socket.
func (s *sockIO) TryWriteBuffers(bufs net.Buffers) (net.Buffers, error) {
	if s.rc == nil {
		return bufs, nil
	}
	for len(bufs) > 0 {
		var n int
		var err error
		if bufs, n, err = s.writev(bufs, false); err != nil || n == 0 {
			return bufs, err
		}
	}
	return nil, nil
}

// writev makes one writev of up to maxIOV buffers and returns what is
// left and how much it wrote; with wait it waits for room in the socket.
func (s *sockIO) writev(bufs net.Buffers, wait bool) (net.Buffers, int, error) {
	s.iov = s.iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		var v syscall.Iovec
		v.Base = &b[0]
		v.SetLen(len(b))
		s.iov = append(s.iov, v)
		if len(s.iov) == maxIOV {
			break
		}
	}
	if len(s.iov) == 0 {
		return nil, 0, nil
	}
	s.wwait = wait
	err := s.rc.Write(s.writeFn)
	n, errno := s.wn, s.werrno
	if err != nil {
		return bufs, 0, err
	}
	if errno != 0 {
		return bufs, 0, os.NewSyscallError("writev", errno)
	}
	return consume(bufs, n), n, nil
}

// consume drops the first n bytes of bufs.
func consume(bufs net.Buffers, n int) net.Buffers {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}
