package blockdev

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// OpenOptions are the settings common to every backend when a leg is
// opened from its address.
type OpenOptions struct {
	// Logger receives the backend's log lines. Nil means no logging.
	Logger hclog.Logger
	// Create makes a file backend create the file with CreateSize bytes
	// when it does not exist.
	Create     bool
	CreateSize int64
	// ReadOnly opens the device without write access: every backend
	// refuses writes (and persistent reservation changes) with an error
	// matching ErrReadOnly, and Flush does nothing. A file is also opened
	// O_RDONLY.
	ReadOnly bool
	// MayRegainAccess, when set, is asked before a backend restores this
	// node's write access by itself after a reconnect (an iSCSI initiator
	// re-registering its reservation key after a re-login). An error
	// vetoes it: a node that was fenced while disconnected must not undo
	// the fence. Nil means the backend decides alone.
	MayRegainAccess func() error
}

// Opener opens a device from an address whose scheme it was registered for.
type Opener func(ctx context.Context, addr string, opts OpenOptions) (Device, error)

var (
	openersMu sync.RWMutex
	openers   = map[string]Opener{}
)

// RegisterScheme makes Open hand addresses of the form scheme://... to fn.
// Backends in other packages (the iSCSI initiator) register from init, so
// blockdev never imports them.
func RegisterScheme(scheme string, fn Opener) {
	openersMu.Lock()
	defer openersMu.Unlock()
	if _, dup := openers[scheme]; dup {
		panic("blockdev: scheme registered twice: " + scheme)
	}
	openers[scheme] = fn
}

// Schemes lists the registered address schemes.
func Schemes() []string {
	openersMu.RLock()
	defer openersMu.RUnlock()
	s := make([]string, 0, len(openers))
	for k := range openers {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Open opens the device at addr: "scheme://..." goes to the backend
// registered for that scheme; anything else is a file or block-device path.
func Open(ctx context.Context, addr string, opts OpenOptions) (Device, error) {
	if addr == "" {
		return nil, fmt.Errorf("blockdev: empty device address")
	}
	if i := strings.Index(addr, "://"); i > 0 {
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("blockdev: bad device address %q: %w", addr, err)
		}
		openersMu.RLock()
		fn := openers[u.Scheme]
		openersMu.RUnlock()
		if fn == nil {
			return nil, fmt.Errorf("blockdev: unknown device scheme %q in %q (known: %s)", u.Scheme, addr, strings.Join(Schemes(), ", "))
		}
		return fn(ctx, addr, opts)
	}
	openersMu.RLock()
	fn := openers["file"]
	openersMu.RUnlock()
	if fn == nil {
		return nil, fmt.Errorf("blockdev: no file backend registered")
	}
	return fn(ctx, addr, opts)
}
