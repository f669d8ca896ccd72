// Package adminclient is the client side of a node's admin API, shared by
// the operator tools (shoald status/leave/watch, lockctl, shoalblk). It
// finds the node to ask and the credentials to show from the same node
// configuration file the daemon reads, and moves on to another member
// when the node it asks is down.
//
// Which node: the addresses of --admin in order, else the admin address
// of --config, else 127.0.0.1:7080. Once one node answers, the admin URLs
// of every member it lists are tried after the given ones, so a command
// that loses its node carries on through another. A node named in --config
// that does not answer at all leaves the hosts of the file's
// initial_cluster (with the same admin port) to try, in that order.
//
// Credentials: --cacert with --cert and --key (a certificate from the
// cluster's CA: an admin, or read-only with the OU "read-only"), else the
// TLS files of --config (with a node-local CA, the node's own
// certificate), else the admin token of --token-file or of the data
// directory of --config.
//
// Usage:
//
//	var t adminclient.Target
//	t.Flags(cmd.Flags())
//	c, err := t.Client()
//	var st cluster.Status
//	err = c.Get(ctx, "/api/status", &st)
package adminclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/adminauth"
)

// Errors. ErrUnreachable: no node answered (safe to retry later; a
// request that changes something was not sent, or its node died before
// answering, so read the state back before repeating it). ErrNoAuth and
// ErrForbidden: the node refused the credentials (401) or their role
// (403); retrying with the same credentials does not help.
var (
	ErrUnreachable = errors.New("no node's admin API answers")
	ErrNoAuth      = errors.New("the admin API refused the credentials")
	ErrForbidden   = errors.New("the admin API refused this role")
)

// StatusError is an answer other than 2xx. It wraps ErrNoAuth for 401
// and ErrForbidden for 403.
type StatusError struct {
	URL  string
	Code int
	// Message is the answer's body (its "error" field when it is JSON).
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.URL, e.Code, http.StatusText(e.Code), e.Message)
}

// Unwrap maps 401 and 403 to the sentinel errors.
func (e *StatusError) Unwrap() error {
	switch e.Code {
	case http.StatusUnauthorized:
		return ErrNoAuth
	case http.StatusForbidden:
		return ErrForbidden
	}
	return nil
}

// Explain adds to a refusal what the user can do about it: which
// credentials to give (401) or which role is needed (403). Other errors
// come back as they are.
func Explain(err error) error {
	switch {
	case errors.Is(err, ErrNoAuth):
		return fmt.Errorf("%w (give --config with a node's configuration file, or --cacert/--cert/--key of the cluster's CA, or --token-file)", err)
	case errors.Is(err, ErrForbidden):
		return fmt.Errorf("%w (this needs an admin certificate or the admin token)", err)
	}
	return err
}

// DefaultAdmin is the admin address asked when neither --admin nor
// --config names one.
const DefaultAdmin = "127.0.0.1:7080"

// Target is where a tool finds the admin API and what it shows it.
type Target struct {
	// Admin are admin addresses (host:port or https:// URLs) in order of
	// preference.
	Admin []string
	// Config is a node configuration file (HCL).
	Config string
	// CACert, Cert and Key are PEM files of the cluster's CA and a
	// client certificate it issued.
	CACert, Cert, Key string
	// TokenFile holds the admin token.
	TokenFile string
	// Timeout bounds one request (0: 10 s); streams are bounded by their
	// context only.
	Timeout time.Duration
}

// Flags registers --admin, --config (when config), --cacert, --cert, --key
// and --token-file on fs. A flag fs already has is left alone.
func (t *Target) Flags(fs *pflag.FlagSet, config bool) {
	if fs.Lookup("admin") == nil {
		fs.StringSliceVar(&t.Admin, "admin", nil, "admin addresses of nodes to ask, comma-separated, in order of preference (default: the admin address of --config, else "+DefaultAdmin+"); other members are tried when these do not answer")
	}
	if config && fs.Lookup("config") == nil {
		fs.StringVarP(&t.Config, "config", "c", "", "node configuration file to take the admin address and the TLS files (or the admin token) from")
	}
	fs.StringVar(&t.CACert, "cacert", "", "the cluster's CA certificate (default: from --config)")
	fs.StringVar(&t.Cert, "cert", "", "client certificate from the cluster's CA (default: from --config)")
	fs.StringVar(&t.Key, "key", "", "key of --cert")
	fs.StringVar(&t.TokenFile, "token-file", "", "file holding a node's admin token, instead of a client certificate")
}

// Client builds the client. It reads the files but sends nothing.
func (t Target) Client() (*Client, error) {
	var cfg *cluster.Config
	if t.Config != "" {
		c, err := cluster.LoadFile(t.Config)
		if err != nil {
			return nil, err
		}
		cfg = &c
	}
	var bases, fallback []string
	for _, a := range t.Admin {
		if a = strings.TrimSpace(a); a != "" {
			bases = append(bases, a)
		}
	}
	if len(bases) == 0 {
		addr := DefaultAdmin
		if cfg != nil {
			addr = cfg.Admin.Addr
			fallback = peerAdmins(*cfg)
		}
		if addr == "off" {
			return nil, fmt.Errorf("the node's admin listener is off (admin.addr in %s)", t.Config)
		}
		bases = []string{addr}
	}
	for i, b := range bases {
		bases[i] = normalize(b)
	}
	c := &Client{timeout: t.Timeout, fallback: fallback}
	if c.timeout <= 0 {
		c.timeout = 10 * time.Second
	}
	c.bases = bases
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 5 * time.Second,
		DialContext: (&net.Dialer{Timeout: 3 * time.Second}).DialContext}
	if !allPlain(bases) {
		tlsCfg, header, err := t.credentials(cfg)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig, c.header = tlsCfg, header
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

func allPlain(bases []string) bool {
	for _, b := range bases {
		if !strings.HasPrefix(b, "http://") {
			return false
		}
	}
	return true
}

// normalize makes an address a base URL: https:// unless it says http://.
func normalize(a string) string {
	a = strings.TrimRight(a, "/")
	if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
		return a
	}
	return "https://" + a
}

// peerAdmins are the hosts of the configuration's initial_cluster with its
// admin port: where the other members' admin APIs are when the nodes are
// laid out alike (the last resort of a node that does not answer).
func peerAdmins(cfg cluster.Config) []string {
	_, port, err := net.SplitHostPort(cfg.Admin.Addr)
	if err != nil || cfg.Etcd.InitialCluster == "" {
		return nil
	}
	var out []string
	for _, m := range strings.Split(cfg.Etcd.InitialCluster, ",") {
		_, u, ok := strings.Cut(m, "=")
		if !ok {
			continue
		}
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Hostname() == "" {
			continue
		}
		out = append(out, "https://"+net.JoinHostPort(pu.Hostname(), port))
	}
	return out
}

// credentials builds the TLS client configuration and, with a token, the
// Authorization header.
func (t Target) credentials(cfg *cluster.Config) (*tls.Config, string, error) {
	files := cluster.CertFiles{CA: t.CACert, Cert: t.Cert, Key: t.Key}
	if files.CA == "" && cfg != nil {
		tc := cfg.TLS
		files = cluster.CertFiles{CA: tc.CAFile, Cert: tc.CertFile, Key: tc.KeyFile}
		if auto := cfg.TLSAutoDir(); files.CA == "" && auto != "" {
			// A node with a local CA issued itself a certificate into
			// its data directory: the tool shows the same one.
			files = cluster.CertFiles{
				CA:   filepath.Join(auto, "ca.pem"),
				Cert: filepath.Join(cfg.DataDir, "certs", cfg.NodeName+".pem"),
				Key:  filepath.Join(cfg.DataDir, "certs", cfg.NodeName+"-key.pem"),
			}
			if _, err := os.Stat(files.Cert); err != nil {
				files.Cert, files.Key = "", ""
			}
		}
	}
	if files.CA == "" {
		return nil, "", errors.New("the admin API is HTTPS with the cluster's CA: give --config, or --cacert with --cert and --key, or --cacert with --token-file")
	}
	tlsCfg, err := cluster.ClientTLS(files)
	if err != nil {
		return nil, "", err
	}
	header := ""
	tokenFile := t.TokenFile
	if tokenFile == "" && files.Cert == "" && cfg != nil {
		tokenFile = filepath.Join(cfg.DataDir, adminauth.TokenFile)
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, "", fmt.Errorf("admin token: %w", err)
		}
		header = "Bearer " + strings.TrimSpace(string(b))
	}
	return tlsCfg, header, nil
}

// Client sends requests to the first node that answers. Safe for
// concurrent use.
type Client struct {
	http     *http.Client
	header   string
	timeout  time.Duration
	fallback []string

	mu      sync.Mutex
	bases   []string
	cur     int
	learned bool
}

// Base is the base URL of the node asked last (or first to ask).
func (c *Client) Base() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bases[c.cur]
}

// Skip makes the next request start at the node after base (a node whose
// stream ended), so base is tried last.
func (c *Client) Skip(base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, b := range c.bases {
		if b == base {
			c.cur = (i + 1) % len(c.bases)
			return
		}
	}
}

// HTTP is the underlying client: TLS and credentials, no timeout.
func (c *Client) HTTP() *http.Client {
	return &http.Client{Transport: &authTransport{base: c.http.Transport, header: c.header}}
}

// Get sends GET path and decodes a JSON answer into out (nil: discard).
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Post sends POST path with body as JSON (nil: empty) and decodes a JSON
// answer into out (nil: discard).
func (c *Client) Post(ctx context.Context, path string, body, out any) error {
	return c.Do(ctx, http.MethodPost, path, body, out)
}

// Do sends one request, bounded by the client's timeout, and decodes a
// JSON answer into out. A GET goes to the next node when a node does not
// answer; a request that changes something goes to another node only when
// the connection was refused (so it was never sent).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s%s: bad answer: %w", resp.Request.URL.Host, path, err)
	}
	return nil
}

// Stream sends GET path and returns the open answer for the caller to
// read until ctx ends; the caller closes its body.
func (c *Client) Stream(ctx context.Context, path string) (*http.Response, error) {
	return c.send(ctx, http.MethodGet, path, nil)
}

func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	idempotent := method == http.MethodGet || method == http.MethodHead
	var errs []error
	var unavailable *StatusError
	tried := map[string]bool{}
	for {
		base, ok := c.next(tried)
		if !ok {
			break
		}
		tried[base] = true
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.header != "" {
			req.Header.Set("Authorization", c.header)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil || (!idempotent && !refused(err)) {
				return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, base, err)
			}
			continue
		}
		c.settle(ctx, base)
		if resp.StatusCode/100 != 2 {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			msg := strings.TrimSpace(string(b))
			var j struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(b, &j) == nil && j.Error != "" {
				msg = j.Error
			}
			se := &StatusError{URL: base + path, Code: resp.StatusCode, Message: msg}
			if idempotent && resp.StatusCode == http.StatusServiceUnavailable {
				// Between two incarnations a node serves no locks or
				// volume: another node may.
				unavailable = se
				continue
			}
			return nil, se
		}
		return resp, nil
	}
	if unavailable != nil {
		return nil, unavailable
	}
	return nil, fmt.Errorf("%w: %w", ErrUnreachable, errors.Join(errs...))
}

// next is the first base not tried yet, starting at the one that answered
// last; the configuration's fallbacks come last, once nothing else is left.
func (c *Client) next(tried map[string]bool) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.bases {
		i := (c.cur + k) % len(c.bases)
		if !tried[c.bases[i]] {
			c.cur = i
			return c.bases[i], true
		}
	}
	if !c.learned {
		for _, f := range c.fallback {
			if !tried[f] {
				return f, true
			}
		}
	}
	return "", false
}

// settle remembers base as the node that answers and, the first time,
// learns the other members' admin URLs from it.
func (c *Client) settle(ctx context.Context, base string) {
	c.mu.Lock()
	c.cur = c.add(base)
	learned := c.learned
	c.learned = true
	c.mu.Unlock()
	if learned {
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/members", nil)
	if err != nil {
		return
	}
	if c.header != "" {
		req.Header.Set("Authorization", c.header)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var view cluster.MembersView
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&view) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range view.Members {
		if m.AdminURL != "" {
			c.add(normalize(m.AdminURL))
		}
	}
}

// add appends base unless known and returns its index (under mu).
func (c *Client) add(base string) int {
	for i, b := range c.bases {
		if b == base {
			return i
		}
	}
	c.bases = append(c.bases, base)
	return len(c.bases) - 1
}

// refused tells a request that never left (the dial failed) from one that
// may have reached the node.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// authTransport adds the Authorization header of the admin token.
type authTransport struct {
	base   http.RoundTripper
	header string
}

func (t *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.header != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", t.header)
	}
	return t.base.RoundTrip(r)
}
