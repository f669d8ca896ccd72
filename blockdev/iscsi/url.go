package iscsi

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultPort is the IANA iSCSI port.
const DefaultPort = 3260

// Address is a parsed iscsi:// URL in the form libiscsi uses:
// iscsi://[user[%password]@]host[:port]/target-iqn/lun. Target and LUN may
// be empty (a portal address, for discovery).
type Address struct {
	User, Password string
	// Portal is host:port.
	Portal string
	Target string
	LUN    uint64
	HasLUN bool
}

// ParseURL parses an iscsi:// address.
func ParseURL(s string) (Address, error) {
	var a Address
	rest, ok := strings.CutPrefix(s, "iscsi://")
	if !ok {
		return a, fmt.Errorf("iscsi: address %q does not start with iscsi://", s)
	}
	// The user part may hold '%' and '@' is its end; split by hand since
	// net/url rejects a bare '%'.
	if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
		cred := rest[:at]
		rest = rest[at+1:]
		user, pass, _ := strings.Cut(cred, "%")
		var err error
		if a.User, err = url.PathUnescape(user); err != nil {
			return a, fmt.Errorf("iscsi: bad user in %q: %w", redact(s), err)
		}
		a.Password = pass
		if a.User == "" {
			return a, fmt.Errorf("iscsi: empty user in %q", redact(s))
		}
	}
	hostport, path, _ := strings.Cut(rest, "/")
	if hostport == "" {
		return a, fmt.Errorf("iscsi: no host in %q", redact(s))
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), strconv.Itoa(DefaultPort)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return a, fmt.Errorf("iscsi: bad port %q in %q", port, redact(s))
	}
	a.Portal = net.JoinHostPort(host, port)
	path = strings.TrimSuffix(path, "/")
	if path == "" {
		return a, nil
	}
	target, lun, hasLUN := strings.Cut(path, "/")
	a.Target = target
	if hasLUN {
		n, err := strconv.ParseUint(lun, 10, 14)
		if err != nil {
			return a, fmt.Errorf("iscsi: bad LUN %q in %q", lun, redact(s))
		}
		a.LUN, a.HasLUN = n, true
	}
	return a, nil
}

// String renders the address without the password.
func (a Address) String() string {
	var b strings.Builder
	b.WriteString("iscsi://")
	if a.User != "" {
		b.WriteString(url.PathEscape(a.User))
		b.WriteString("@")
	}
	b.WriteString(a.Portal)
	if a.Target != "" {
		b.WriteString("/" + a.Target)
		if a.HasLUN {
			fmt.Fprintf(&b, "/%d", a.LUN)
		}
	}
	return b.String()
}

// redact hides a password in an address for error messages.
func redact(s string) string {
	rest, ok := strings.CutPrefix(s, "iscsi://")
	if !ok {
		return s
	}
	host := strings.SplitN(rest, "/", 2)[0]
	at := strings.LastIndex(host, "@")
	if at < 0 {
		return s
	}
	user, _, _ := strings.Cut(rest[:at], "%")
	return "iscsi://" + user + "@" + rest[at+1:]
}
