package web

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/web/session"
)

// tcpPair is a loopback TCP connection: the server's end wrapped with a
// write-behind queue of limit bytes, and the client's end.
func tcpPair(t *testing.T, limit int) (*writeBehindConn, net.Conn) {
	t.Helper()
	return tcpPairFor(t, Config{WriteBehind: limit})
}

// tcpPairFor is tcpPair for the listener of cfg.
func tcpPairFor(t *testing.T, cfg Config) (*writeBehindConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wl := Listener(cfg, ln)
	got := make(chan net.Conn, 1)
	go func() {
		c, err := wl.Accept()
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-got
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return server.(*writeBehindConn), client
}

// Writes from several goroutines at once, small ones queued and ones of
// the limit or more written directly, reach the peer whole (no Write's
// bytes split by another's) and, from each goroutine, in order; Close
// then delivers everything queued before the peer sees the end.
func TestWriteBehindKeepsWritesWholeAndInOrder(t *testing.T) {
	const limit = 20 << 10 // queues of 4 and 20 KiB
	server, client := tcpPair(t, limit)
	var got bytes.Buffer
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(&got, client)
		read <- err
	}()
	const writers, writes = 4, 300
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range writes {
				// Records of 16 bytes to twice the limit, each a
				// line of its writer's and index's digits.
				n := 16 + (i*977+g*131)%(2*limit)
				rec := bytes.Repeat([]byte{byte('a' + g)}, n)
				copy(rec, fmt.Sprintf("%d:%d:", g, i))
				rec[n-1] = '\n'
				if _, err := server.Write(rec); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the peer did not see the end of the stream after Close")
	}
	next := make([]int, writers)
	for _, line := range bytes.Split(bytes.TrimSuffix(got.Bytes(), []byte("\n")), []byte("\n")) {
		var g, i int
		if _, err := fmt.Sscanf(string(line), "%d:%d:", &g, &i); err != nil {
			t.Fatalf("a record starts with %.20q: %v (a Write split by another)", line, err)
		}
		if i != next[g] {
			t.Fatalf("writer %d: record %d arrived, want %d", g, i, next[g])
		}
		next[g]++
		want := byte('a' + g)
		for _, b := range line[len(fmt.Sprintf("%d:%d:", g, i)):] {
			if b != want {
				t.Fatalf("writer %d record %d holds %q: another Write's bytes inside it", g, i, b)
			}
		}
	}
	for g, n := range next {
		if n != writes {
			t.Fatalf("writer %d: %d records arrived, want %d", g, n, writes)
		}
	}
}

// A peer that reads nothing: Writes queue up to the limit, then wait;
// a write deadline ends the wait with os.ErrDeadlineExceeded; Close
// returns at once and the connection is closed within the linger.
func TestWriteBehindBoundsItsQueue(t *testing.T) {
	const limit = 64 << 10
	server, client := tcpPair(t, limit)
	// Fill the socket's buffers and the queue: a Write of the limit or
	// more is written directly and waits on the socket; stop there.
	server.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	chunk := make([]byte, 16<<10)
	start := time.Now()
	var err error
	for written := 0; written < 64<<20 && err == nil; written += len(chunk) {
		_, err = server.Write(chunk)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a Write into a full queue returned %v, want os.ErrDeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the deadline of 300ms ended the wait after %v", d)
	}
	server.mu.Lock()
	queued := len(server.queued)
	server.mu.Unlock()
	if queued > limit {
		t.Fatalf("%d bytes queued, limit %d", queued, limit)
	}
	start = time.Now()
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v with a peer that reads nothing", d)
	}
	if _, err := server.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a Write after Close returned %v, want net.ErrClosed", err)
	}
	// The writer gives up within the linger and closes the socket: the
	// peer then reads to its end (an error: bytes were dropped).
	client.SetReadDeadline(time.Now().Add(writeBehindLinger + 10*time.Second))
	if _, err := io.Copy(io.Discard, client); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the socket was still open %v after Close", writeBehindLinger+10*time.Second)
	}
}

// An error of the socket reaches the next Write, and every one after.
func TestWriteBehindReportsTheSocketsError(t *testing.T) {
	server, client := tcpPair(t, 4<<10)
	// The peer closes with unread bytes: its kernel answers further
	// segments with a reset.
	client.(*net.TCPConn).SetLinger(0)
	client.Close()
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = server.Write(make([]byte, 1024))
	}
	if err == nil {
		t.Fatal("Writes to a reset connection kept succeeding for 10s")
	}
	if _, again := server.Write([]byte("x")); again == nil {
		t.Fatalf("a Write after the error %v succeeded", err)
	}
}

// A node's server with write-behind answers over HTTP/1.1, HTTP/2 over
// cleartext and HTTP/2 over TLS (and HTTP/1.1 over TLS), many requests at
// once, each body whole, each connection through the queue.
func TestWriteBehindServesEveryProtocol(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	bodies := map[string][]byte{}
	for _, n := range []int{0, 1, 1000, 16 << 10, 300 << 10, 1 << 20} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		bodies[fmt.Sprintf("/%d", n)] = b
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	})
	for _, tc := range []struct {
		name  string
		proto int
		tls   bool
	}{{"http1", 1, false}, {"h2c", 2, false}, {"h2-tls", 2, true}, {"http1-tls", 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.WriteBehind = 64 << 10
			tr := &http.Transport{}
			scheme := "http://"
			if tc.tls {
				cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
				tr.TLSClientConfig = &tls.Config{RootCAs: pool}
				tr.ForceAttemptHTTP2 = tc.proto == 2
				if tc.proto == 1 {
					tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
				}
				scheme = "https://"
			} else if tc.proto == 2 {
				cfg.H2C = true
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			srv, err := NewHTTPServer(cfg, h)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			queued := 0 // connections served through the queue
			srv.ConnState = func(c net.Conn, st http.ConnState) {
				if st != http.StateNew {
					return
				}
				if tc, ok := c.(*tls.Conn); ok {
					c = tc.NetConn()
				}
				if _, ok := c.(*writeBehindConn); ok {
					mu.Lock()
					queued++
					mu.Unlock()
				}
			}
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := Listener(cfg, inner)
			if tc.tls {
				go srv.ServeTLS(ln, "", "")
			} else {
				go srv.Serve(ln)
			}
			defer srv.Close()
			client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			defer tr.CloseIdleConnections()
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 30 {
						p := fmt.Sprintf("/%d", []int{0, 1, 1000, 16 << 10, 300 << 10, 1 << 20}[(g+i)%6])
						resp, err := client.Get(scheme + inner.Addr().String() + p)
						if err != nil {
							t.Error(err)
							return
						}
						b, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						if err != nil {
							t.Error(err)
							return
						}
						if resp.ProtoMajor != tc.proto {
							t.Errorf("%s answered over %s", p, resp.Proto)
						}
						if !bytes.Equal(b, bodies[p]) {
							t.Errorf("%s: %d bytes differ from the %d sent", p, len(b), len(bodies[p]))
							return
						}
					}
				})
			}
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if queued == 0 {
				t.Fatal("no connection was served through the queue")
			}
		})
	}
}

// A queue takes the smaller pooled buffer that holds it: 4 KiB or the
// limit; a buffer given back is taken again.
func TestWriteBehindQueueBuffersBySize(t *testing.T) {
	q := newQueueBufs(100 << 10)
	for _, tc := range []struct{ n, want int }{
		{1, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 100 << 10}, {60 << 10, 100 << 10},
		{100 << 10, 100 << 10},
	} {
		b := q.get(tc.n)
		if len(b) != 0 || cap(b) != tc.want {
			t.Errorf("get(%d): len %d cap %d, want 0 and %d", tc.n, len(b), cap(b), tc.want)
		}
		q.put(append(b, 'x'))
	}
	if q := newQueueBufs(4 << 10); len(q.sizes) != 1 || cap(q.get(1)) != 4<<10 {
		t.Errorf("a 4 KiB limit: sizes %v", q.sizes)
	}
	if q := newQueueBufs(1 << 10); cap(q.get(1)) != 1<<10 || cap(q.get(5<<10)) != 1<<10 {
		t.Errorf("a 1 KiB limit: sizes %v", q.sizes)
	}
}

// A node's Server serves its connections through the queue when
// Config.WriteBehind is set, and straight on the socket when it is 0 (in
// the wrapper still when there is a send timeout, every Write direct).
func TestServerWritesBehindItsConnections(t *testing.T) {
	for _, tc := range []struct {
		limit   int
		timeout time.Duration
		wrapped bool
	}{{DefaultConfig().WriteBehind, DefaultConfig().SendTimeout, true}, {0, time.Minute, true}, {0, 0, false}} {
		limit := tc.limit
		c := newCluster()
		populate(t, c, map[string]string{"site/index.html": "<p>home</p>"})
		cfg := testConfig(t)
		cfg.WriteBehind, cfg.SendTimeout = limit, tc.timeout
		m := &member{c: c, self: session.Owner{Node: "n1", Incarnation: "1"}}
		c.set(m.self, session.OwnerLive)
		srv, err := NewServer(cfg, c.vol.Node(1), m)
		if err != nil {
			t.Fatal(err)
		}
		conns := make(chan net.Conn, 4)
		set := srv.srv.ConnState
		srv.srv.ConnState = func(c net.Conn, st http.ConnState) {
			if set != nil {
				set(c, st)
			}
			if st == http.StateNew {
				conns <- c
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		resp, body := do(t, "GET", "http://"+ln.Addr().String()+"/", nil, "")
		srv.Close()
		if resp.StatusCode != 200 || body != "<p>home</p>" {
			t.Fatalf("WriteBehind %d: %d %q", limit, resp.StatusCode, body)
		}
		w, wrapped := (<-conns).(*writeBehindConn)
		if wrapped != tc.wrapped {
			t.Fatalf("WriteBehind %d, SendTimeout %v: the connection is wrapped: %v", limit, tc.timeout, wrapped)
		}
		if wrapped && (w.sendTimeout != tc.timeout || (limit == 0) != (w.limit == 1)) {
			t.Fatalf("WriteBehind %d, SendTimeout %v: wrapped with limit %d, send timeout %v", limit, tc.timeout, w.limit, w.sendTimeout)
		}
	}
}

// smallBuffers makes the socket buffers of both ends small, so that the
// server's writes wait for the client's reads instead of filling megabytes
// of kernel buffers first.
func smallBuffers(t *testing.T, server *writeBehindConn, client net.Conn) {
	t.Helper()
	if err := server.Conn.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	if err := client.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
}

// A peer that stops reading: with a send timeout, the Writes fail with
// os.ErrDeadlineExceeded once a write to the socket has waited that long,
// with no deadline of the caller's, and the socket is closed, so that the
// server's goroutines and the queue are given back; queued and direct
// writes alike (WriteBehind 0 writes every Write directly).
func TestSendTimeoutEndsAPeerThatStopsReading(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, limit := range []int{64 << 10, 0} {
		server, client := tcpPairFor(t, Config{WriteBehind: limit, SendTimeout: timeout})
		smallBuffers(t, server, client)
		chunk := make([]byte, 16<<10)
		start := time.Now()
		ended := make(chan error, 1)
		go func() {
			var err error
			for written := 0; written < 64<<20 && err == nil; written += len(chunk) {
				_, err = server.Write(chunk)
			}
			ended <- err
		}()
		var err error
		select {
		case err = <-ended:
		case <-time.After(15 * time.Second):
			// The cleanup's Close of both ends lets the Writes go.
			t.Fatalf("WriteBehind %d: Writes to a peer that reads nothing still waited after 15s (send timeout %v)", limit, timeout)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WriteBehind %d: Writes to a peer that reads nothing ended with %v, want os.ErrDeadlineExceeded", limit, err)
		}
		var te interface{ Timeout() bool }
		if !errors.As(err, &te) || !te.Timeout() {
			t.Fatalf("WriteBehind %d: %v is not a timeout", limit, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("WriteBehind %d: the send timeout of %v ended the Writes after %v", limit, timeout, d)
		}
		// The socket is closed: the peer reads what was sent, then its
		// end (or a reset), not a timeout.
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, client); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("WriteBehind %d: the socket was still open 10s after the send timeout", limit)
		}
		if err := server.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("WriteBehind %d: Close after the send timeout: %v", limit, err)
		}
	}
}

// A slow peer that keeps reading keeps its connection past the send
// timeout: the timeout bounds each write to the socket (of at most
// sendChunk bytes), not the answer. The peer takes 64 KiB every 10ms, so
// the 16 MiB (one direct Write of 8 MiB, then 16 KiB queued ones) take at
// least 2.5s against a send timeout of 1s.
func TestSendTimeoutLetsASlowReaderFinish(t *testing.T) {
	const timeout = time.Second
	for _, limit := range []int{64 << 10, 0} {
		server, client := tcpPairFor(t, Config{WriteBehind: limit, SendTimeout: timeout})
		smallBuffers(t, server, client)
		const total = 16 << 20
		read := make(chan error, 1)
		var got int
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := io.ReadFull(client, buf)
				got += n
				if err != nil {
					if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
						err = nil
					}
					read <- err
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		start := time.Now()
		if _, err := server.Write(make([]byte, 8<<20)); err != nil {
			t.Fatalf("WriteBehind %d: a direct write to a slow reader: %v", limit, err)
		}
		chunk := make([]byte, 16<<10)
		for written := 8 << 20; written < total; written += len(chunk) {
			if _, err := server.Write(chunk); err != nil {
				t.Fatalf("WriteBehind %d: a queued write to a slow reader after %v: %v", limit, time.Since(start), err)
			}
		}
		if err := server.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-read; err != nil {
			t.Fatalf("WriteBehind %d: reading: %v", limit, err)
		}
		if got != total {
			t.Fatalf("WriteBehind %d: the peer read %d bytes of %d", limit, got, total)
		}
		if d := time.Since(start); d < 2*timeout {
			t.Fatalf("WriteBehind %d: done in %v: the reader was not slow enough to test anything", limit, d)
		}
	}
}
