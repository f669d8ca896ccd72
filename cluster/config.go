package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/internal/lease"
)

// Timing profiles. Fast suits a cluster on one machine (tests, the demo);
// production suits nodes on a real network.
const (
	ProfileFast       = "fast"
	ProfileProduction = "production"
)

// Etcd modes.
const (
	EtcdEmbedded = "embedded"
	EtcdExternal = "external"
)

// Config is a node's configuration. It is read from one HCL file (see
// fixtures/demo for samples) and flags override single fields. Durations
// are written in the file as Go durations ("250ms", "3s") and typed when
// the file is read; a zero duration means the profile's default. Every
// accessor works on a Config whether or not Validate has run, and
// Validate changes nothing.
type Config struct {
	// NodeName names this node in the cluster; letters, digits, '-', '_'
	// and '.', at most 63 characters. Required.
	NodeName string `hcl:"node_name,optional"`
	// ClusterName names the cluster. Nodes with different cluster names
	// never join each other, and a data directory remembers its cluster.
	// Default "shoal".
	ClusterName string `hcl:"cluster_name,optional"`
	// DataDir holds the embedded etcd member, the node identity file and
	// generated certificates. Required.
	DataDir string `hcl:"data_dir,optional"`
	// Profile picks timing defaults: "fast" or "production". Fields set
	// explicitly win over the profile. Default "production".
	Profile string `hcl:"profile,optional"`
	// LogLevel is trace, debug, info, warn or error. Default "info".
	LogLevel string `hcl:"log_level,optional"`
	// LogJSON writes log lines as JSON. Default false.
	LogJSON bool `hcl:"log_json,optional"`
	// ReusePort binds the embedded etcd member's client and peer
	// listeners, the admin listener and the web tier's listener with
	// SO_REUSEPORT (socket(7)), so a supervisor that reserved those ports
	// beforehand (bound, never listening: internal/portres) can hand them
	// to the node without a window in which another program takes them.
	// Default false.
	ReusePort bool `hcl:"reuse_port,optional"`

	Etcd   EtcdConfig
	TLS    TLSConfig
	Lease  LeaseConfig
	Admin  AdminConfig
	Volume VolumeConfig
	Web    WebConfig

	// Logger receives the node's log lines; built from LogLevel and
	// LogJSON when nil. Not read from the file.
	Logger hclog.Logger
}

// EtcdConfig says whether the node embeds an etcd member or uses an
// external etcd cluster, and how.
type EtcdConfig struct {
	// Mode is "embedded" (default) or "external".
	Mode string `hcl:"mode,optional"`
	// ClientAddr is host:port where the embedded member serves clients.
	// Default 127.0.0.1:2379.
	ClientAddr string `hcl:"client_addr,optional"`
	// PeerAddr is host:port where the embedded member talks to its peers.
	// Default 127.0.0.1:2380.
	PeerAddr string `hcl:"peer_addr,optional"`
	// InitialCluster lists the bootstrap members as name=https://host:port
	// (peer addresses), comma separated. Empty means a one-member cluster
	// of this node alone.
	InitialCluster string `hcl:"initial_cluster,optional"`
	// Join is a comma-separated list of client URLs of a running cluster.
	// When set and the data directory is new, the node adds itself as a
	// member (member add) instead of bootstrapping.
	Join string `hcl:"join,optional"`
	// Endpoints are the client URLs of an external etcd cluster (mode
	// external).
	Endpoints []string `hcl:"endpoints,optional"`
	// HeartbeatInterval is the embedded member's raft heartbeat. Default
	// 25ms (fast) or 100ms (production).
	HeartbeatInterval time.Duration `hcl:"heartbeat_interval,optional"`
	// ElectionTimeout is the embedded member's raft election timeout.
	// Default 250ms (fast) or 1s (production). At least 5x the heartbeat.
	ElectionTimeout time.Duration `hcl:"election_timeout,optional"`
	// StartTimeout bounds how long the node waits for its member to join a
	// quorum before giving up. Default 20s (fast) or 60s (production).
	StartTimeout time.Duration `hcl:"start_timeout,optional"`
	// RequestTimeout bounds one etcd request. Default 2s (fast) or 5s
	// (production).
	RequestTimeout time.Duration `hcl:"request_timeout,optional"`
	// Dial, when set, opens the node's connections to etcd (addr is an
	// endpoint's host:port) instead of a plain TCP dial. Not read from
	// the file: tests put a network they can cut in front of a node.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// TLSConfig names the certificate files for peer and client traffic. Every
// connection is mutual TLS: the same node certificate serves and
// authenticates, and must carry both server and client usage.
type TLSConfig struct {
	// CAFile is the PEM CA that signs every node and client certificate.
	CAFile string `hcl:"ca_file,optional"`
	// CertFile and KeyFile are this node's certificate and key.
	CertFile string `hcl:"cert_file,optional"`
	KeyFile  string `hcl:"key_file,optional"`
	// AutoDir, when the three files above are empty, is a directory with a
	// local CA (ca.pem, ca-key.pem) from which the node issues itself a
	// certificate on first start, creating the CA if missing. Meant for
	// the demo and tests.
	AutoDir string `hcl:"auto_dir,optional"`
}

// LeaseConfig sets the heartbeat: the etcd lease that carries the node's
// liveness and owns its locks.
type LeaseConfig struct {
	// TTL is the lease time-to-live. Survivors see a dead node as down
	// within TTL plus about half a second. Default 2s (fast) or 10s
	// (production).
	TTL time.Duration `hcl:"ttl,optional"`
	// KeepAliveInterval is how often the lease is renewed. Default 250ms
	// (fast) or 1s (production).
	KeepAliveInterval time.Duration `hcl:"keepalive_interval,optional"`
	// KeepAliveTimeout bounds one renewal attempt before it is retried
	// (possibly on another member). Default 500ms (fast) or 1s.
	KeepAliveTimeout time.Duration `hcl:"keepalive_timeout,optional"`
	// SelfFenceMargin: the node stops trusting its lease this long before
	// the TTL after its last confirmed renewal runs out, so it has
	// stopped using its locks before any other node can see the lease as
	// expired. Default 250ms (fast) or 1s (production).
	SelfFenceMargin time.Duration `hcl:"self_fence_margin,optional"`
}

// AdminConfig is the node's admin HTTP listener (/healthz, /readyz,
// /metrics, /api/...).
type AdminConfig struct {
	// Addr is host:port. Default 127.0.0.1:7080. Empty string after
	// defaults is refused; use "off" to disable.
	Addr string `hcl:"addr,optional"`
	// Debug mounts the routes that exist for fault tests (POST
	// /api/volume/write, a write loop through the volume). Default false:
	// a production node never serves them.
	Debug bool `hcl:"debug,optional"`
	// Listener, when set, is the admin listener, bound by the caller and
	// handed over (Addr must then name its address). Not read from the
	// file.
	Listener net.Listener
}

// WebConfig is the node's web tier (package web): the site from the
// store on the shared volume and the sessions API. It needs a volume.
type WebConfig struct {
	// Addr is the host:port it serves HTTP on; empty (the default) runs no
	// web tier.
	Addr string `hcl:"addr,optional"`
	// TLSCert and TLSKey, both set, serve HTTPS with HTTP/2.
	TLSCert string `hcl:"tls_cert,optional"`
	TLSKey  string `hcl:"tls_key,optional"`
	// ContentRoot is the store directory served as the site. Default
	// "site".
	ContentRoot string `hcl:"content_root,optional"`
	// SeedDir is a local directory loaded into ContentRoot when that is
	// empty (the first start). Default none.
	SeedDir string `hcl:"seed_dir,optional"`
	// KeyRetention is how long an idempotency key's answer is kept.
	// Default 24h.
	KeyRetention time.Duration `hcl:"key_retention,optional"`
	// AccessLog is a file the access log is appended to ("-": standard
	// output). Default none.
	AccessLog string `hcl:"access_log,optional"`
	// AccessLogFormat is "common" or "combined". Default "combined".
	AccessLogFormat string `hcl:"access_log_format,optional"`
	// AllowOrigins are the origins whose pages may call the sessions API
	// across origins (the demo's page fails over between nodes).
	AllowOrigins []string `hcl:"allow_origins,optional"`
	// MaxCachedLocks bounds the lock grants the store keeps cached on
	// this node (store.Config.MaxCachedLocks); past it the idle ones used
	// least lately are given up. Default 12288 (store.DefaultMaxCachedLocks).
	// Every node's copy of the lock table holds every node's grants, so
	// a lower bound saves memory on every node (and etcd keys) at the cost
	// of more lock requests for a working set larger than the bound.
	MaxCachedLocks int `hcl:"max_cached_locks,optional"`
	// LoopbackSendBuffer is the socket send buffer in bytes of
	// connections from loopback clients, such as a TLS-terminating proxy
	// on the same machine (web.Config.LoopbackSendBuffer); 0 leaves them
	// to the kernel's sizing. Default 262144.
	LoopbackSendBuffer *int `hcl:"loopback_send_buffer,optional"`
	// WriteBehind is how many bytes each connection may queue for its
	// socket while the server goes on (web.Config.WriteBehind); 0 writes
	// from the serving goroutine. Default 65536.
	WriteBehind *int `hcl:"write_behind,optional"`
	// SendTimeout closes a connection whose client takes nothing of what
	// it is sent for this long (web.Config.SendTimeout, as nginx's
	// send_timeout); "off" (SendTimeoutOff) never does. Default 60s, at
	// most 1h.
	SendTimeout time.Duration `hcl:"send_timeout,optional"`
}

// SendTimeoutOff, as WebConfig.SendTimeout (written "off" in the file),
// lets a client that stops reading keep its connection.
const SendTimeoutOff time.Duration = -1

// VolumeConfig is the shared volume the node uses: a mirror formatted with
// shoalblk format over the same legs on every node.
type VolumeConfig struct {
	// Name is the volume's name in region locks and the leg table.
	// Default "vol0".
	Name string `hcl:"name,optional"`
	// Legs are the mirror's legs: file or block-device paths, or
	// iscsi://host[:port]/iqn/lun URLs. Empty: the node runs no volume.
	Legs []string `hcl:"legs,optional"`
	// Slot is this node's write-intent bitmap slot, from 0 to the slot
	// count chosen at format minus one; unique per node. Required with legs.
	Slot *int `hcl:"slot,optional"`
	// Fencing is how a dead node is cut off from the legs: "auto"
	// (default: persistent reservations on the legs that have them, and
	// waiting out the lease for the legs that have not), "reservations",
	// "lease" or "agent".
	Fencing string `hcl:"fencing,optional"`
	// FenceAgent is the fence agent command for fencing = "agent" (options
	// go to its stdin in the fence-agents convention).
	FenceAgent string `hcl:"fence_agent,optional"`
	// FenceAgentTimeout bounds one run of the fence agent. Default 30s.
	FenceAgentTimeout time.Duration `hcl:"fence_agent_timeout,optional"`
	// Watchdog is a watchdog device to pet while the lease holds (for
	// example /dev/watchdog). Empty: none.
	Watchdog string `hcl:"watchdog,optional"`
	// DetectTimeout: when every leg is fenced by persistent reservations,
	// nodes also send each other UDP heartbeats, and a node silent this
	// long is recovered at once, before its lease expires (the fence makes
	// that safe; a node suspected wrongly is fenced and rejoins). "off"
	// disables it. Default 400ms (fast) or 2s (production).
	DetectTimeout time.Duration `hcl:"detect_timeout,optional"`
	// DetectInterval is the heartbeat period; at most a third of
	// DetectTimeout. Default 50ms (fast) or 250ms (production).
	DetectInterval time.Duration `hcl:"detect_interval,optional"`
	// HeartbeatAddr is the UDP host:port the detector listens on. Default:
	// the admin address's host, any free port.
	HeartbeatAddr string `hcl:"heartbeat_addr,optional"`
}

// DetectOff, as VolumeConfig.DetectTimeout (written "off" in the file),
// turns the direct failure detector off.
const DetectOff time.Duration = -1

// Detect returns the failure detector's timing; zero timeout means off.
func (c Config) Detect() (interval, timeout time.Duration) { return c.Volume.detect(c.profileName()) }

func (v VolumeConfig) detect(profile string) (interval, timeout time.Duration) {
	interval, timeout = 250*time.Millisecond, 2*time.Second
	if profile == ProfileFast {
		interval, timeout = 50*time.Millisecond, 400*time.Millisecond
	}
	if v.DetectInterval > 0 {
		interval = v.DetectInterval
	}
	switch {
	case v.DetectTimeout == DetectOff:
		timeout = 0
	case v.DetectTimeout > 0:
		timeout = v.DetectTimeout
	}
	return interval, timeout
}

// VolumeName is the volume's name, "vol0" when none is set.
func (v VolumeConfig) VolumeName() string {
	if v.Name == "" {
		return "vol0"
	}
	return v.Name
}

// FencingMethod is how dead nodes are fenced, "auto" when none is set.
func (v VolumeConfig) FencingMethod() string {
	if v.Fencing == "" {
		return FenceAuto
	}
	return v.Fencing
}

// Fencing methods.
const (
	FenceAuto         = "auto"
	FenceReservations = "reservations"
	FenceLease        = "lease"
	FenceAgent        = "agent"
)

// AgentTimeout bounds one run of the fence agent: 30s when none is set.
func (v VolumeConfig) AgentTimeout() time.Duration {
	if v.FenceAgentTimeout > 0 {
		return v.FenceAgentTimeout
	}
	return 30 * time.Second
}

func (c *Config) validateVolume() error {
	v := c.Volume
	if !nodeNameRE.MatchString(v.VolumeName()) {
		return fieldErr("volume.name", "%q: use letters, digits, '.', '_' and '-'", v.Name)
	}
	switch v.FencingMethod() {
	case FenceAuto, FenceReservations, FenceLease:
	case FenceAgent:
		if v.FenceAgent == "" {
			return fieldErr("volume.fence_agent", "required with fencing = %q", FenceAgent)
		}
	default:
		return fieldErr("volume.fencing", "%q: want auto, reservations, lease or agent", v.Fencing)
	}
	if v.FenceAgentTimeout < 0 {
		return fieldErr("volume.fence_agent_timeout", "must be positive, got %s", v.FenceAgentTimeout)
	}
	if v.DetectTimeout < 0 && v.DetectTimeout != DetectOff {
		return fieldErr("volume.detect_timeout", "must be positive or \"off\", got %s", v.DetectTimeout)
	}
	if v.DetectInterval < 0 {
		return fieldErr("volume.detect_interval", "must be positive, got %s", v.DetectInterval)
	}
	interval, timeout := c.Detect()
	if timeout > 0 && timeout < 3*interval {
		return fieldErr("volume.detect_timeout", "%s must be at least 3x volume.detect_interval (%s)", timeout, interval)
	}
	if v.HeartbeatAddr != "" {
		if _, _, err := net.SplitHostPort(v.HeartbeatAddr); err != nil {
			return fieldErr("volume.heartbeat_addr", "%q: want host:port", v.HeartbeatAddr)
		}
	}
	if len(v.Legs) == 0 {
		if v.Slot != nil {
			return fieldErr("volume.slot", "given without volume.legs")
		}
		return nil
	}
	seen := map[string]bool{}
	for _, l := range v.Legs {
		if l == "" {
			return fieldErr("volume.legs", "an empty leg address")
		}
		if seen[l] {
			return fieldErr("volume.legs", "%q listed twice", l)
		}
		seen[l] = true
	}
	if v.Slot == nil {
		return fieldErr("volume.slot", "required with volume.legs (unique per node)")
	}
	if *v.Slot < 0 {
		return fieldErr("volume.slot", "%d: slots count from 0", *v.Slot)
	}
	return nil
}

// profileDefaults holds the timing of one profile.
type profileDefaults struct {
	heartbeat, election, start, request      time.Duration
	ttl, keepAlive, keepAliveTimeout, margin time.Duration
}

var profiles = map[string]profileDefaults{
	ProfileFast: {
		heartbeat: 25 * time.Millisecond, election: 250 * time.Millisecond,
		start: 20 * time.Second, request: 2 * time.Second,
		ttl: 2 * time.Second, keepAlive: 250 * time.Millisecond,
		keepAliveTimeout: 500 * time.Millisecond, margin: 250 * time.Millisecond,
	},
	ProfileProduction: {
		heartbeat: 100 * time.Millisecond, election: time.Second,
		start: 60 * time.Second, request: 5 * time.Second,
		ttl: 10 * time.Second, keepAlive: time.Second,
		keepAliveTimeout: time.Second, margin: time.Second,
	},
}

// DefaultConfig returns the configuration of a single node with nothing
// configured: a one-member embedded cluster on 127.0.0.1 with the
// production timing. NodeName and DataDir still need values.
func DefaultConfig() Config {
	return Config{
		ClusterName: "shoal",
		Volume:      VolumeConfig{Name: "vol0", Fencing: FenceAuto},
		Profile:     ProfileProduction,
		LogLevel:    "info",
		Etcd: EtcdConfig{
			Mode:       EtcdEmbedded,
			ClientAddr: "127.0.0.1:2379",
			PeerAddr:   "127.0.0.1:2380",
		},
		Admin: AdminConfig{Addr: "127.0.0.1:7080"},
	}
}

// LoadFile reads an HCL configuration file over DefaultConfig: what the
// file sets (false and empty values included) replaces the default.
// Durations are typed here. Unknown fields and blocks, values of the wrong
// type and malformed durations are errors that name the file, line and
// field. The result is not validated (see Validate).
func LoadFile(path string) (Config, error) {
	cfg := DefaultConfig()
	src, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return cfg, fmt.Errorf("config: %s", diagString(diags))
	}
	body := file.Body.(*hclsyntax.Body)
	if err := decodeAttrs(body.Attributes, reflect.ValueOf(&cfg).Elem(), ""); err != nil {
		return cfg, err
	}
	seen := map[string]bool{}
	for _, b := range body.Blocks {
		rng := b.TypeRange.String()
		f, ok := fieldByTag(reflect.ValueOf(&cfg).Elem(), b.Type, true)
		if !ok {
			return cfg, fmt.Errorf("config: %s: unknown block %q", rng, b.Type)
		}
		if len(b.Labels) > 0 {
			return cfg, fmt.Errorf("config: %s: block %q takes no labels", rng, b.Type)
		}
		if seen[b.Type] {
			return cfg, fmt.Errorf("config: %s: block %q given twice", rng, b.Type)
		}
		seen[b.Type] = true
		if len(b.Body.Blocks) > 0 {
			return cfg, fmt.Errorf("config: %s: block %q has no inner blocks", b.Body.Blocks[0].TypeRange.String(), b.Type)
		}
		if err := decodeAttrs(b.Body.Attributes, f, b.Type+"."); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// fieldByTag finds the field of struct v named name in the file: an
// attribute by its hcl tag, or (block) a block by its lower-case name.
func fieldByTag(v reflect.Value, name string, block bool) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, tagged := f.Tag.Lookup("hcl")
		tagName, _, _ := strings.Cut(tag, ",")
		switch {
		case block && !tagged && f.Type.Kind() == reflect.Struct && strings.ToLower(f.Name) == name:
			return v.Field(i), true
		case !block && tagged && tagName == name:
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

var durationType = reflect.TypeOf(time.Duration(0))

// decodeAttrs sets the fields of struct v from attrs.
func decodeAttrs(attrs hclsyntax.Attributes, v reflect.Value, prefix string) error {
	for name, a := range attrs {
		rng := a.SrcRange.String()
		field := prefix + name
		f, ok := fieldByTag(v, name, false)
		if !ok {
			return fmt.Errorf("config: %s: unknown field %q", rng, field)
		}
		val, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return fmt.Errorf("config: %s", diagString(diags))
		}
		bad := func(want string) error {
			return fmt.Errorf("config: %s: %s: want %s, got %s", rng, field, want, val.Type().FriendlyName())
		}
		switch {
		case f.Type() == durationType:
			sv, err := convert.Convert(val, cty.String)
			if err != nil || sv.IsNull() {
				return bad("a duration such as \"250ms\"")
			}
			str := sv.AsString()
			if str == "off" && (field == "volume.detect_timeout" || field == "web.send_timeout") {
				f.SetInt(-1) // DetectOff, SendTimeoutOff
				continue
			}
			d, err := time.ParseDuration(str)
			if err != nil || d <= 0 {
				return fmt.Errorf("config: %s: %s: %q is not a duration (write it like 250ms or 3s)", rng, field, str)
			}
			f.SetInt(int64(d))
		case f.Kind() == reflect.String:
			sv, err := convert.Convert(val, cty.String)
			if err != nil || sv.IsNull() {
				return bad("a string")
			}
			f.SetString(sv.AsString())
		case f.Kind() == reflect.Bool:
			bv, err := convert.Convert(val, cty.Bool)
			if err != nil || bv.IsNull() {
				return bad("true or false")
			}
			f.SetBool(bv.True())
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			lv, err := convert.Convert(val, cty.List(cty.String))
			if err != nil || lv.IsNull() {
				return bad("a list of strings")
			}
			var list []string
			for _, e := range lv.AsValueSlice() {
				if e.IsNull() {
					return bad("a list of strings")
				}
				list = append(list, e.AsString())
			}
			f.Set(reflect.ValueOf(list))
		case f.Kind() == reflect.Int || f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Int:
			nv, err := convert.Convert(val, cty.Number)
			if err != nil || nv.IsNull() {
				return bad("a whole number")
			}
			n, acc := nv.AsBigFloat().Int64()
			if acc != big.Exact || int64(int(n)) != n {
				return bad("a whole number")
			}
			i := int(n)
			if f.Kind() == reflect.Int {
				f.SetInt(int64(i))
			} else {
				f.Set(reflect.ValueOf(&i))
			}
		default:
			return fmt.Errorf("config: %s: %s cannot be set from a file", rng, field)
		}
	}
	return nil
}

func diagString(diags hcl.Diagnostics) string {
	var parts []string
	for _, d := range diags {
		s := d.Summary
		if d.Detail != "" {
			s += ": " + d.Detail
		}
		if d.Subject != nil {
			s = d.Subject.String() + ": " + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// FieldError is a configuration error that names the field at fault.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "config: " + e.Field + ": " + e.Msg }

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid configuration")

func fieldErr(field, format string, args ...any) error {
	return fmt.Errorf("%w: %w", ErrInvalidConfig, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Validate fills profile defaults into empty timing fields and checks every
// field, alone and against the others. The error names the field.
func (c *Config) Validate() error {
	if !nodeNameRE.MatchString(c.clusterName()) {
		return fieldErr("cluster_name", "%q: use letters, digits, '.', '_' and '-' (at most 63)", c.ClusterName)
	}
	if c.NodeName == "" {
		return fieldErr("node_name", "required")
	}
	if !nodeNameRE.MatchString(c.NodeName) {
		return fieldErr("node_name", "%q: use letters, digits, '.', '_' and '-' (at most 63)", c.NodeName)
	}
	if c.DataDir == "" {
		return fieldErr("data_dir", "required")
	}
	if _, ok := profiles[c.profileName()]; !ok {
		return fieldErr("profile", "%q: want %q or %q", c.Profile, ProfileFast, ProfileProduction)
	}
	if _, err := hclogLevel(c.LogLevel); err != nil {
		return fieldErr("log_level", "%v", err)
	}
	for _, d := range []struct {
		field string
		val   time.Duration
	}{
		{"etcd.heartbeat_interval", c.Etcd.HeartbeatInterval},
		{"etcd.election_timeout", c.Etcd.ElectionTimeout},
		{"etcd.start_timeout", c.Etcd.StartTimeout},
		{"etcd.request_timeout", c.Etcd.RequestTimeout},
		{"lease.ttl", c.Lease.TTL},
		{"lease.keepalive_interval", c.Lease.KeepAliveInterval},
		{"lease.keepalive_timeout", c.Lease.KeepAliveTimeout},
		{"lease.self_fence_margin", c.Lease.SelfFenceMargin},
	} {
		if d.val < 0 {
			return fieldErr(d.field, "must be positive, got %s", d.val)
		}
	}
	ttl, keepAlive, keepAliveTimeout, margin, election := c.LeaseTTL(), c.KeepAliveInterval(), c.KeepAliveTimeout(), c.SelfFenceMargin(), c.ElectionTimeout()
	if ttl%time.Second != 0 {
		return fieldErr("lease.ttl", "%s: etcd leases have whole-second TTLs", ttl)
	}
	if ttl <= 3*keepAlive {
		return fieldErr("lease.ttl", "%s must exceed 3x lease.keepalive_interval (%s)", ttl, keepAlive)
	}
	if margin >= ttl/2 {
		return fieldErr("lease.self_fence_margin", "%s must be less than half of lease.ttl (%s)", margin, ttl)
	}

	switch c.EtcdMode() {
	case EtcdEmbedded:
		if err := c.validateEmbedded(); err != nil {
			return err
		}
	case EtcdExternal:
		if len(c.Etcd.Endpoints) == 0 {
			return fieldErr("etcd.endpoints", "required in external mode")
		}
		for _, ep := range c.Etcd.Endpoints {
			if err := checkURL(ep); err != nil {
				return fieldErr("etcd.endpoints", "%v", err)
			}
		}
		if c.Etcd.InitialCluster != "" || c.Etcd.Join != "" {
			return fieldErr("etcd.mode", "external mode runs no member: initial_cluster and join do not apply")
		}
	default:
		return fieldErr("etcd.mode", "%q: want %q or %q", c.Etcd.Mode, EtcdEmbedded, EtcdExternal)
	}

	// The lease must survive losing the etcd leader: followers notice after
	// one election timeout and a new leader may need up to another before
	// it serves renewals; one renewal attempt may time out on the way.
	ride := lease.RideOut(keepAlive, keepAliveTimeout, election, margin)
	if ttl < ride {
		return fieldErr("lease.ttl", "%s cannot ride out an etcd leader change: with keepalive %s, keepalive timeout %s, election timeout %s and self-fence margin %s it must be at least %s",
			ttl, keepAlive, keepAliveTimeout, election, margin, ride.Round(time.Millisecond))
	}
	// etcd raises a TTL below its minimum (1.5 election timeouts) silently;
	// refuse it instead so the configured TTL is the one in force.
	if minTTL := lease.EtcdMinTTL(election); ttl < minTTL {
		return fieldErr("lease.ttl", "%s is below etcd's minimum lease TTL of 1.5x election timeout (%s)", ttl, minTTL)
	}

	if err := c.validateTLS(); err != nil {
		return err
	}
	if err := c.validateVolume(); err != nil {
		return err
	}
	if c.Admin.Addr != "off" {
		if _, _, err := net.SplitHostPort(c.Admin.Addr); err != nil {
			return fieldErr("admin.addr", "%q: want host:port or \"off\"", c.Admin.Addr)
		}
	}
	if c.Web.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Web.Addr); err != nil {
			return fieldErr("web.addr", "%q: want host:port", c.Web.Addr)
		}
		if len(c.Volume.Legs) == 0 {
			return fieldErr("web.addr", "the web tier serves from the store on the shared volume: volume.legs is empty")
		}
	}
	if c.Web.MaxCachedLocks < 0 {
		return fieldErr("web.max_cached_locks", "%d is negative", c.Web.MaxCachedLocks)
	}
	if b := c.Web.LoopbackSendBuffer; b != nil && *b < 0 {
		return fieldErr("web.loopback_send_buffer", "%d is negative (0 leaves the buffer to the kernel)", *b)
	}
	if b := c.Web.WriteBehind; b != nil && (*b < 0 || *b > 64<<20) {
		return fieldErr("web.write_behind", "%d is out of range (0 for no queue, at most 64 MiB)", *b)
	}
	if t := c.Web.SendTimeout; t != SendTimeoutOff && (t < 0 || t > time.Hour) {
		return fieldErr("web.send_timeout", "%s is out of range (at most 1h, or \"off\")", t)
	}
	return nil
}

func (c *Config) validateEmbedded() error {
	heartbeat, election := c.HeartbeatInterval(), c.ElectionTimeout()
	if heartbeat < 10*time.Millisecond {
		return fieldErr("etcd.heartbeat_interval", "%s is too short (at least 10ms)", heartbeat)
	}
	if election < 5*heartbeat {
		return fieldErr("etcd.election_timeout", "%s must be at least 5x etcd.heartbeat_interval (%s)", election, heartbeat)
	}
	if election > 50*time.Second {
		return fieldErr("etcd.election_timeout", "%s exceeds etcd's maximum of 50s", election)
	}
	for _, f := range []struct{ name, val string }{{"etcd.client_addr", c.Etcd.ClientAddr}, {"etcd.peer_addr", c.Etcd.PeerAddr}} {
		host, port, err := net.SplitHostPort(f.val)
		if err != nil || host == "" || port == "" {
			return fieldErr(f.name, "%q: want host:port", f.val)
		}
	}
	if c.Etcd.ClientAddr == c.Etcd.PeerAddr {
		return fieldErr("etcd.peer_addr", "same as etcd.client_addr (%s)", c.Etcd.PeerAddr)
	}
	if len(c.Etcd.Endpoints) > 0 {
		return fieldErr("etcd.endpoints", "only for external mode")
	}
	if c.Etcd.InitialCluster != "" && c.Etcd.Join != "" {
		return fieldErr("etcd.join", "give either initial_cluster (bootstrap) or join (add to a running cluster), not both")
	}
	if c.Etcd.InitialCluster != "" {
		members, err := ParseInitialCluster(c.Etcd.InitialCluster)
		if err != nil {
			return fieldErr("etcd.initial_cluster", "%v", err)
		}
		self, ok := members[c.NodeName]
		if !ok {
			return fieldErr("etcd.initial_cluster", "does not list this node %q", c.NodeName)
		}
		if u, _ := url.Parse(self); u.Host != c.Etcd.PeerAddr {
			return fieldErr("etcd.initial_cluster", "lists %s for %q but etcd.peer_addr is %s", u.Host, c.NodeName, c.Etcd.PeerAddr)
		}
	}
	if c.Etcd.Join != "" {
		for _, ep := range strings.Split(c.Etcd.Join, ",") {
			if err := checkURL(strings.TrimSpace(ep)); err != nil {
				return fieldErr("etcd.join", "%v", err)
			}
		}
	}
	return nil
}

func (c *Config) validateTLS() error {
	t := c.TLS
	files := t.CAFile != "" || t.CertFile != "" || t.KeyFile != ""
	switch {
	case files && t.AutoDir != "":
		return fieldErr("tls.auto_dir", "give either the certificate files or auto_dir, not both")
	case files:
		for _, f := range []struct{ name, path string }{{"tls.ca_file", t.CAFile}, {"tls.cert_file", t.CertFile}, {"tls.key_file", t.KeyFile}} {
			if f.path == "" {
				return fieldErr(f.name, "required when any certificate file is given")
			}
			if _, err := os.Stat(f.path); err != nil {
				return fieldErr(f.name, "%v", err)
			}
		}
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q: want https://host:port (all traffic is TLS)", s)
	}
	return nil
}

// ParseInitialCluster parses "name=https://host:port,..." into a map of
// member name to peer URL.
func ParseInitialCluster(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%q: want name=https://host:port", part)
		}
		if err := checkURL(u); err != nil {
			return nil, err
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("member %q listed twice", name)
		}
		out[name] = u
	}
	return out, nil
}

func hclogLevel(s string) (hclog.Level, error) {
	if s == "" {
		return hclog.Info, nil
	}
	l := hclog.LevelFromString(s)
	if l == hclog.NoLevel {
		return l, fmt.Errorf("%q: want trace, debug, info, warn or error", s)
	}
	return l, nil
}

// Accessors. Each works on any Config, validated or not: an unset field
// gives the default (of the profile, for timing).

func (c Config) profileName() string {
	if c.Profile == "" {
		return ProfileProduction
	}
	return c.Profile
}

// leaseAdvice is what an operator can change when this node's lease
// renewals run late: a node on the fast profile's short lease moves to the
// production profile or a longer lease.ttl; a node on its own timing
// lengthens lease.ttl (or gives the node more CPU).
func (c Config) leaseAdvice() string {
	if c.profileName() == ProfileFast && c.Lease.TTL == 0 {
		return fmt.Sprintf("profile %q keeps a %v lease, meant for an idle machine; on a busy one use profile = %q (a %v lease) or a longer lease.ttl",
			ProfileFast, c.LeaseTTL(), ProfileProduction, profiles[ProfileProduction].ttl)
	}
	return fmt.Sprintf("a %v lease (profile %q) needs renewals within it; give the node more CPU, or a longer lease.ttl", c.LeaseTTL(), c.profileName())
}

func (c Config) timing() profileDefaults {
	if p, ok := profiles[c.profileName()]; ok {
		return p
	}
	return profiles[ProfileProduction]
}

func orDefault(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

func (c Config) clusterName() string {
	if c.ClusterName == "" {
		return "shoal"
	}
	return c.ClusterName
}

// Cluster is the cluster's name, "shoal" when none is set.
func (c Config) Cluster() string { return c.clusterName() }

// EtcdMode is "embedded" (also when none is set) or "external".
func (c Config) EtcdMode() string {
	if c.Etcd.Mode == "" {
		return EtcdEmbedded
	}
	return c.Etcd.Mode
}

// TLSAutoDir is the local CA directory the node issues its certificate
// from: tls.auto_dir, or <data_dir>/pki when no certificate file is
// given; "" when the certificate files are given.
func (c Config) TLSAutoDir() string {
	t := c.TLS
	if t.AutoDir != "" || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
		return t.AutoDir
	}
	return filepath.Join(c.DataDir, "pki")
}

// LeaseTTL is the lease time-to-live.
func (c Config) LeaseTTL() time.Duration { return orDefault(c.Lease.TTL, c.timing().ttl) }

// KeepAliveInterval is the lease renewal period.
func (c Config) KeepAliveInterval() time.Duration {
	return orDefault(c.Lease.KeepAliveInterval, c.timing().keepAlive)
}

// KeepAliveTimeout bounds one renewal attempt.
func (c Config) KeepAliveTimeout() time.Duration {
	return orDefault(c.Lease.KeepAliveTimeout, c.timing().keepAliveTimeout)
}

// SelfFenceMargin is how early the node stops trusting its lease.
func (c Config) SelfFenceMargin() time.Duration {
	return orDefault(c.Lease.SelfFenceMargin, c.timing().margin)
}

// HeartbeatInterval is the embedded member's raft heartbeat.
func (c Config) HeartbeatInterval() time.Duration {
	return orDefault(c.Etcd.HeartbeatInterval, c.timing().heartbeat)
}

// ElectionTimeout is the embedded member's raft election timeout.
func (c Config) ElectionTimeout() time.Duration {
	return orDefault(c.Etcd.ElectionTimeout, c.timing().election)
}

// StartTimeout bounds waiting for the member to join a quorum.
func (c Config) StartTimeout() time.Duration { return orDefault(c.Etcd.StartTimeout, c.timing().start) }

// RequestTimeout bounds one etcd request.
func (c Config) RequestTimeout() time.Duration {
	return orDefault(c.Etcd.RequestTimeout, c.timing().request)
}

// Prefix is the root of this cluster's keys in etcd.
func (c Config) Prefix() string { return keys.Cluster(c.clusterName()).Root() }

// NewLogger builds the logger from LogLevel and LogJSON.
func (c *Config) NewLogger(out io.Writer) hclog.Logger {
	lvl, _ := hclogLevel(c.LogLevel)
	return hclog.New(&hclog.LoggerOptions{
		Name:       "shoald",
		Level:      lvl,
		JSONFormat: c.LogJSON,
		Output:     out,
	}).With("node", c.NodeName)
}
