package web

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Server is a node's web tier: the site from the store's ContentRoot, the
// sessions API, the optional access log and the key collector.
type Server struct {
	cfg     Config
	api     *API
	handler http.Handler
	srv     *http.Server
	alog    *AccessLog
	alogF   io.Closer
	log     hclog.Logger

	mu      sync.Mutex
	ln      net.Listener
	stop    chan struct{}
	done    chan struct{}
	served  chan struct{}
	started bool
	// flushing is the access log's flusher.
	flushing sync.WaitGroup
}

// NewServer checks cfg and builds the tier over st. It serves nothing until
// Start or Serve.
func NewServer(cfg Config, st Store, mem Membership) (*Server, error) {
	api, err := NewAPI(cfg, st, mem)
	if err != nil {
		return nil, err
	}
	cfg = api.cfg
	if err := makeLayoutDirs(st, cfg.Layout); err != nil {
		return nil, err
	}
	if err := st.MkdirAll(cfg.ContentRoot, 0o755); err != nil {
		return nil, fmt.Errorf("web: making %s: %w", cfg.ContentRoot, err)
	}
	content, err := subTree(st, cfg.ContentRoot)
	if err != nil {
		return nil, fmt.Errorf("%w: ContentRoot: %v", ErrConfig, err)
	}
	s := &Server{cfg: cfg, api: api, log: cfg.Logger.Named("web"), stop: make(chan struct{}), done: make(chan struct{}), served: make(chan struct{})}
	ch := ContentHandler(content, s.log.Named("content"), cfg.ContentCache)
	apiH := cors(cfg.AllowOrigins, api)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api" || strings.HasPrefix(r.URL.Path, "/api/") {
			if _, ok := treePath(r.URL.Path); !ok || strings.Contains(r.URL.Path, "//") {
				writeProblem(w, http.StatusBadRequest, "Malformed path", "the path has empty, . or .. segments")
				return
			}
			apiH.ServeHTTP(w, r)
			return
		}
		ch.ServeHTTP(w, r)
	})
	if cfg.AccessLog != "" {
		var w io.Writer = os.Stdout
		if cfg.AccessLog != "-" {
			f, err := os.OpenFile(cfg.AccessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				return nil, fmt.Errorf("%w: AccessLog: %v", ErrConfig, err)
			}
			w, s.alogF = f, f
		}
		s.alog = NewAccessLog(w, cfg.AccessLogFormat, cfg.Clock)
		h = s.alog.Wrap(h)
	}
	if cfg.Middleware != nil {
		h = cfg.Middleware(h)
	}
	s.handler = h
	if s.srv, err = NewHTTPServer(cfg, h); err != nil {
		return nil, err
	}
	return s, nil
}

// NewHTTPServer is the http.Server a node serves its tier's handler h with
// (and a benchmark its peers, so that both run with the same settings):
// HTTP/1.1, plus HTTP/2 over TLS 1.2 or later (ALPN) when cfg.TLSCertFile
// is set, or HTTP/2 over cleartext with prior knowledge when cfg.H2C is;
// header read and idle timeouts; its error log on cfg.Logger. The
// certificate is loaded here: a missing or bad file is an ErrConfig now,
// not at the first connection. Serve it on Listener(cfg, ln), with
// ServeTLS(l, "", "") when TLSConfig is set, else Serve.
func NewHTTPServer(cfg Config, h http.Handler) (*http.Server, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.Named("web").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	switch {
	case cfg.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: TLSCertFile/TLSKeyFile: %v", ErrConfig, err)
		}
		p.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	case cfg.H2C:
		p.SetUnencryptedHTTP2(true)
	}
	srv.Protocols = p
	if n := cfg.LoopbackSendBuffer; n > 0 {
		srv.ConnState = func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				boundLoopbackSendBuffer(c, n)
			}
		}
	}
	return srv, nil
}

// boundLoopbackSendBuffer sets c's send buffer to n bytes when its peer is
// on a loopback address (Config.LoopbackSendBuffer). A connection whose
// option cannot be set keeps the kernel's sizing: it only runs slower.
func boundLoopbackSendBuffer(c net.Conn, n int) {
	// Under a *tls.Conn, a writeBehindConn, or both.
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	if a, ok := tcp.RemoteAddr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		_ = tcp.SetWriteBuffer(n)
	}
}

// Listener is ln as a node serves it for cfg: its connections queue what
// they write when cfg.WriteBehind is set, and fail when a write to the
// socket takes longer than cfg.SendTimeout (see both); ln itself when
// neither is set.
func Listener(cfg Config, ln net.Listener) net.Listener {
	switch {
	case cfg.WriteBehind > 0:
		return newWriteBehindListener(ln, cfg.WriteBehind, cfg.SendTimeout)
	case cfg.SendTimeout > 0:
		// A queue of one byte: every Write goes to the socket directly,
		// from the server's goroutine, under the send timeout.
		return newWriteBehindListener(ln, 1, cfg.SendTimeout)
	}
	return ln
}

// Handler is the tier's whole HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// API is the sessions API (for the recovery handler and the collector).
func (s *Server) API() *API { return s.api }

// Start listens on Config.Addr and serves in the background; it returns
// the address listened on.
func (s *Server) Start() (net.Addr, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, err
	}
	go s.Serve(ln)
	return ln.Addr(), nil
}

// Serve serves on ln until Close: TLS with HTTP/2 when TLSCertFile is set,
// plain HTTP/1.1 otherwise. It returns nil after Close. A Serve after
// Close (or a second Serve) closes ln and returns an error: a listener
// left open would keep a share of the connections of a port bound with
// SO_REUSEPORT and never answer them.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		ln.Close()
		return errors.New("web: Serve called twice or after Close")
	}
	s.started = true
	ln = Listener(s.cfg, ln)
	s.ln = ln
	s.mu.Unlock()
	go s.collect()
	go s.seed()
	if s.alog != nil {
		s.flushing.Add(1)
		go s.flushLog()
	}
	defer close(s.served)
	var err error
	if s.srv.TLSConfig != nil {
		err = s.srv.ServeTLS(ln, "", "")
	} else {
		err = s.srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// seed loads Config.SeedDir into an empty content root while the node
// already serves (a first start must not wait for hundreds of files).
func (s *Server) seed() {
	if s.cfg.SeedDir == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	n, err := seedFrom(ctx, s.api.st, s.api.mem, s.cfg)
	switch {
	case err != nil:
		s.log.Error("loading the site failed", "from", s.cfg.SeedDir, "error", err)
	case n > 0:
		s.log.Info("site loaded", "files", n, "from", s.cfg.SeedDir, "into", s.cfg.ContentRoot)
	}
}

// flushLog writes the access log's buffered lines out every second, so
// that a line is on disk a second after its request at the latest while
// a busy node still writes many lines at once.
func (s *Server) flushLog() {
	defer s.flushing.Done()
	t := s.cfg.Clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C():
			if err := s.alog.Flush(); err != nil {
				s.log.Warn("writing the access log failed", "error", err)
			}
		}
	}
}

func (s *Server) collect() {
	defer close(s.done)
	t := s.cfg.Clock.NewTicker(s.cfg.CollectInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C():
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
			n, err := s.api.Collect(ctx)
			cancel()
			if err != nil {
				s.log.Warn("collecting idempotency keys failed", "error", err)
			} else if n > 0 {
				s.log.Debug("collected idempotency keys", "count", n)
			}
		}
	}
}

// Close stops serving: it waits up to ShutdownTimeout for requests in
// flight, then cuts the connections. It returns within ShutdownTimeout plus
// the collector's current transaction (at most RequestTimeout).
func (s *Server) Close() error {
	s.mu.Lock()
	started := s.started
	s.started = true // a later Serve refuses
	s.mu.Unlock()
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	if started {
		<-s.done
	}
	s.flushing.Wait()
	if s.alog != nil {
		s.alog.Flush()
	}
	if s.alogF != nil {
		s.alogF.Close()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}
