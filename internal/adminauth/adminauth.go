// Package adminauth guards a node's admin API: HTTPS whose clients show a
// certificate from the cluster's CA or the node's admin token, and two
// roles. A certificate from the cluster's CA is an admin (it already opens
// etcd, where every change can be made) unless its subject carries the
// organizational unit "read-only"; the admin token, kept in the data
// directory, is an admin. A read-only client may use every GET and HEAD
// route; every other method changes something (leave, fail-leg,
// force-release, volume writes) and needs an admin. A short list of paths
// (health, readiness, metrics) needs no credentials at all.
//
// Answers: 401 without credentials (or with a certificate the TLS layer
// did not verify against the CA, which the handshake already refuses),
// 403 for a read-only client on a route that changes something.
package adminauth

import (
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Role is what a client may do.
type Role int

// Roles, weakest first.
const (
	RoleNone Role = iota
	RoleReadOnly
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleReadOnly:
		return "read-only"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ReadOnlyUnit is the organizational unit (OU) that makes a certificate
// from the cluster's CA read-only.
const ReadOnlyUnit = "read-only"

// TokenFile is the admin token's file name in the data directory.
const TokenFile = "admin-token"

// TokenCookie is the cookie a browser keeps the token in after it opened
// /ui/?token=...
const TokenCookie = "shoal_admin_token"

// RoleOfCert is the role of a client whose certificate chain the TLS layer
// verified against the cluster's CA.
func RoleOfCert(leaf *x509.Certificate) Role {
	if slices.Contains(leaf.Subject.OrganizationalUnit, ReadOnlyUnit) {
		return RoleReadOnly
	}
	return RoleAdmin
}

// Guard wraps an admin API's handler.
type Guard struct {
	// Token is the admin token; empty disables token access.
	Token string
	// Public are the paths served without credentials.
	Public []string
}

// DefaultPublic are the paths a load balancer and Prometheus reach without
// credentials.
var DefaultPublic = []string{"/healthz", "/readyz", "/metrics"}

// RoleOf is the role r's credentials give.
func (g Guard) RoleOf(r *http.Request) Role {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return RoleOfCert(r.TLS.VerifiedChains[0][0])
	}
	if g.Token == "" {
		return RoleNone
	}
	tok := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		tok = strings.TrimPrefix(h, "Bearer ")
	} else if c, err := r.Cookie(TokenCookie); err == nil {
		tok = c.Value
	}
	if tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(g.Token)) == 1 {
		return RoleAdmin
	}
	return RoleNone
}

// Needs is the role a request needs: none for a public path, read-only
// for GET and HEAD, admin for everything else.
func (g Guard) Needs(r *http.Request) Role {
	if slices.Contains(g.Public, r.URL.Path) {
		return RoleNone
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return RoleReadOnly
	}
	return RoleAdmin
}

// Wrap returns h behind the guard. A browser that opens any GET route
// with ?token=<admin token> gets the token as a cookie (HttpOnly, Secure,
// SameSite=Strict) and is sent to the same URL without it, so the token
// leaves the address bar and the history.
func (g Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := g.Needs(r)
		if need == RoleNone {
			h.ServeHTTP(w, r)
			return
		}
		if tok := r.URL.Query().Get("token"); tok != "" && r.Method == http.MethodGet && g.Token != "" {
			if subtle.ConstantTimeCompare([]byte(tok), []byte(g.Token)) != 1 {
				http.Error(w, "wrong admin token", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: TokenCookie, Value: g.Token, Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
			u := *r.URL
			q := u.Query()
			q.Del("token")
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		have := g.RoleOf(r)
		switch {
		case have == RoleNone:
			w.Header().Set("WWW-Authenticate", `Bearer realm="shoal admin"`)
			http.Error(w, "credentials needed: a client certificate from the cluster's CA or the admin token", http.StatusUnauthorized)
		case have < need:
			http.Error(w, fmt.Sprintf("%s %s needs the %s role; this client is %s", r.Method, r.URL.Path, need, have), http.StatusForbidden)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// ServerTLS is the admin listener's TLS configuration: the node's
// certificate, and client certificates verified against the CA when a
// client shows one (a browser with the token shows none). The files are
// read again at each handshake, so renewed certificates need no restart.
func ServerTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		return nil, fmt.Errorf("adminauth: %w", err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("adminauth: %w", err)
			}
			return &c, nil
		},
	}, nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("adminauth: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("adminauth: %s holds no certificate", caFile)
	}
	return pool, nil
}

// LoadOrCreateToken returns the admin token kept in dir/admin-token,
// creating it (32 random bytes, hex, mode 0600) when there is none;
// created says whether it did.
func LoadOrCreateToken(dir string) (token string, created bool, err error) {
	path := filepath.Join(dir, TokenFile)
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 32 {
			return "", false, fmt.Errorf("adminauth: %s holds no usable token (at least 32 characters)", path)
		}
		return tok, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("adminauth: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("adminauth: %w", err)
	}
	tok := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return LoadOrCreateToken(dir) // another start won the race
		}
		return "", false, fmt.Errorf("adminauth: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", false, fmt.Errorf("adminauth: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", false, fmt.Errorf("adminauth: %w", err)
	}
	return tok, true, nil
}
