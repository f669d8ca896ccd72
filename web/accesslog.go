package web

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-ha/shoal/internal/clock"
)

// AccessLog writes one line per request in the NCSA common or combined
// format (as Apache httpd's and nginx's "combined"):
//
//	127.0.0.1 - - [29/Nov/2026:21:30:25 +0000] "GET /a.css HTTP/1.1" 200 1234 "-" "curl/8.14"
type AccessLog struct {
	mu       sync.Mutex
	w        *bufio.Writer
	combined bool
	clk      clock.Clock
}

// NewAccessLog writes lines to w in format (LogCommon or LogCombined).
func NewAccessLog(w io.Writer, format string, clk clock.Clock) *AccessLog {
	if clk == nil {
		clk = clock.Real()
	}
	return &AccessLog{w: bufio.NewWriterSize(w, 32<<10), combined: format == LogCombined, clk: clk}
}

// Flush writes buffered lines out.
func (l *AccessLog) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}

// Wrap logs every request h serves.
func (l *AccessLog) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := l.clk.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		l.write(r, rec, start)
	})
}

// quoted escapes s for a quoted field as nginx does by default: '"' and
// '\' with a backslash, bytes below 0x20 and above 0x7e as \xHH (so a
// line never holds a control character or a broken quote); "" is "-".
func quoted(s string) string {
	if s == "" {
		return "-"
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			fmt.Fprintf(&b, `\x%02X`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (l *AccessLog) write(r *http.Request, rec *statusRecorder, start time.Time) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	size := "-"
	if rec.bytes > 0 {
		size = strconv.FormatInt(rec.bytes, 10)
	}
	line := fmt.Sprintf("%s - - [%s] \"%s %s %s\" %d %s", host, start.Format("02/Jan/2006:15:04:05 -0700"),
		quoted(r.Method), quoted(r.RequestURI), r.Proto, status, size)
	if l.combined {
		line += fmt.Sprintf(" \"%s\" \"%s\"", quoted(r.Referer()), quoted(r.UserAgent()))
	}
	l.mu.Lock()
	l.w.WriteString(line)
	l.w.WriteByte('\n')
	if l.w.Buffered() > 16<<10 {
		l.w.Flush()
	}
	l.mu.Unlock()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
