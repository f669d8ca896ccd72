package web

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/web/session"
)

// The NCSA common and combined formats (Apache httpd's LogFormat "%h %l %u
// %t \"%r\" %>s %b" and the same with "\"%{Referer}i\" \"%{User-agent}i\"",
// nginx's "combined"), with nginx's escaping of quoted fields.
var (
	quotedField = `"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\]|\\x[0-9A-F]{2})*)"`
	commonLine  = regexp.MustCompile(`^(\S+) - - \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] ` + quotedField + ` (\d{3}) (\d+|-)$`)
	combinedRe  = regexp.MustCompile(strings.TrimSuffix(commonLine.String(), "$") + ` ` + quotedField + ` ` + quotedField + `$`)
)

// unescape undoes the escaping of a quoted field.
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == 'x' {
			v, _ := strconv.ParseUint(s[i+2:i+4], 16, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

type logCase struct {
	method, path, referer, agent string
	status                       int
	body                         int64 // -1: "-"
}

// serveLogged runs a server with the access log in format, makes the
// requests of cases, and returns the log's lines once the server closed.
func serveLogged(t *testing.T, format string, cases []logCase, waitFlush bool) []string {
	t.Helper()
	c := newCluster()
	populate(t, c, map[string]string{"site/index.html": "<p>home</p>", "site/a.css": "b{}"})
	cfg := testConfig(t)
	cfg.AccessLog = filepath.Join(t.TempDir(), "access.log")
	cfg.AccessLogFormat = format
	m := &member{c: c, self: session.Owner{Node: "n1", Incarnation: "1"}}
	c.set(m.self, session.OwnerLive)
	srv, err := NewServer(cfg, c.vol.Node(1), m)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	base := "http://" + ln.Addr().String()
	for _, lc := range cases {
		req, _ := http.NewRequest(lc.method, base+lc.path, nil)
		if lc.method == "POST" {
			req.Header.Set("Idempotency-Key", `"log-1"`)
		}
		if lc.referer != "" {
			req.Header.Set("Referer", lc.referer)
		}
		req.Header.Set("User-Agent", lc.agent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != lc.status {
			t.Fatalf("%s %s: %d, want %d", lc.method, lc.path, resp.StatusCode, lc.status)
		}
	}
	if waitFlush {
		// Written out within about a second, without the server closing.
		testutil.WaitFor(t, 10*time.Second, "the access log's lines on disk", func() bool {
			b, _ := os.ReadFile(cfg.AccessLog)
			return bytes.Count(b, []byte("\n")) == len(cases)
		})
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.AccessLog)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

var logCases = []logCase{
	{"GET", "/index.html", "", "curl/8.14", 200, int64(len("<p>home</p>"))},
	{"HEAD", "/a.css", "http://127.0.0.1:8080/", "Mozilla/5.0 (X11; Linux)", 200, -1},
	{"GET", "/missing?q=1", "", `quote " back \ tab` + "\t" + ` utf8 é`, 404, -2},
	{"POST", "/api/v1/sessions", "", "client", 201, -2},
}

func TestAccessLogCombined(t *testing.T) {
	lines := serveLogged(t, LogCombined, logCases, true)
	if len(lines) != len(logCases) {
		t.Fatalf("%d lines for %d requests:\n%s", len(lines), len(logCases), strings.Join(lines, "\n"))
	}
	for i, lc := range logCases {
		m := combinedRe.FindStringSubmatch(lines[i])
		if m == nil {
			t.Fatalf("line %d is not in the combined format: %q", i+1, lines[i])
		}
		checkLogFields(t, lines[i], m, lc)
		if ref := unescape(m[6]); ref != lc.referer && !(lc.referer == "" && ref == "-") {
			t.Errorf("referer %q, want %q", ref, lc.referer)
		}
		if ua := unescape(m[7]); ua != lc.agent {
			t.Errorf("user agent %q, want %q", ua, lc.agent)
		}
	}
}

func TestAccessLogCommon(t *testing.T) {
	lines := serveLogged(t, LogCommon, logCases, false)
	if len(lines) != len(logCases) {
		t.Fatalf("%d lines for %d requests:\n%s", len(lines), len(logCases), strings.Join(lines, "\n"))
	}
	for i, lc := range logCases {
		m := commonLine.FindStringSubmatch(lines[i])
		if m == nil {
			t.Fatalf("line %d is not in the common format: %q", i+1, lines[i])
		}
		checkLogFields(t, lines[i], m, lc)
	}
}

func checkLogFields(t *testing.T, line string, m []string, lc logCase) {
	t.Helper()
	if m[1] != "127.0.0.1" {
		t.Errorf("%q: host %q", line, m[1])
	}
	when, err := time.Parse("02/Jan/2006:15:04:05 -0700", m[2])
	if err != nil || time.Since(when) > time.Minute || time.Until(when) > time.Second {
		t.Errorf("%q: time %q (%v)", line, m[2], err)
	}
	if got, want := unescape(m[3]), lc.method+" "+lc.path+" HTTP/1.1"; got != want {
		t.Errorf("%q: request %q, want %q", line, got, want)
	}
	if m[4] != strconv.Itoa(lc.status) {
		t.Errorf("%q: status %s, want %d", line, m[4], lc.status)
	}
	switch {
	case lc.body == -1 && m[5] != "-":
		t.Errorf("%q: size %s for a bodiless answer, want -", line, m[5])
	case lc.body >= 0 && m[5] != strconv.FormatInt(lc.body, 10):
		t.Errorf("%q: size %s, want %d", line, m[5], lc.body)
	case lc.body == -2 && (m[5] == "-" || m[5] == "0"):
		t.Errorf("%q: size %s for an answer with a body", line, m[5])
	}
}
