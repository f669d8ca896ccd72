package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func validBase() Config {
	c := DefaultConfig()
	c.NodeName, c.DataDir = "n1", "/nonexistent/shoal-test"
	return c
}

// TestAccessorsNeedNoValidate: every accessor gives the profile's timing
// and the defaults on a Config that was never validated, and Validate
// changes nothing.
func TestAccessorsNeedNoValidate(t *testing.T) {
	c := validBase()
	c.Profile = ProfileFast
	if c.LeaseTTL() != 2*time.Second || c.KeepAliveInterval() != 250*time.Millisecond || c.ElectionTimeout() != 250*time.Millisecond {
		t.Fatalf("fast profile: ttl %s keepalive %s election %s", c.LeaseTTL(), c.KeepAliveInterval(), c.ElectionTimeout())
	}
	p := Config{NodeName: "n1", DataDir: "/d"}
	if p.LeaseTTL() != 10*time.Second || p.Prefix() != "/shoal/shoal" || p.EtcdMode() != EtcdEmbedded || p.Volume.FencingMethod() != FenceAuto {
		t.Fatalf("zero config: ttl %s prefix %s mode %s fencing %s", p.LeaseTTL(), p.Prefix(), p.EtcdMode(), p.Volume.FencingMethod())
	}
	if p.TLSAutoDir() != filepath.Join(p.DataDir, "pki") {
		t.Fatalf("auto TLS dir %q", p.TLSAutoDir())
	}
	if _, timeout := p.Detect(); timeout != 2*time.Second {
		t.Fatalf("detect timeout %s", timeout)
	}
	for _, cfg := range []Config{c, validBase()} {
		before := cfg
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(before, cfg) {
			t.Fatalf("Validate changed the configuration:\n%+v\n%+v", before, cfg)
		}
	}
}

func TestValidateNamesTheWrongField(t *testing.T) {
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"node_name", func(c *Config) { c.NodeName = "" }},
		{"node_name", func(c *Config) { c.NodeName = "bad name" }},
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"profile", func(c *Config) { c.Profile = "turbo" }},
		{"log_level", func(c *Config) { c.LogLevel = "loud" }},
		{"lease.ttl", func(c *Config) { c.Lease.TTL = 1500 * time.Millisecond }},
		{"lease.ttl", func(c *Config) { c.Lease.TTL = 3 * time.Second; c.Lease.KeepAliveInterval = time.Second }},
		{"lease.ttl", func(c *Config) {
			c.Profile = ProfileFast
			c.Lease.TTL = time.Second
			c.Lease.KeepAliveInterval = 100 * time.Millisecond
		}},
		{"lease.self_fence_margin", func(c *Config) { c.Lease.SelfFenceMargin = 5 * time.Second }},
		{"lease.keepalive_interval", func(c *Config) { c.Lease.KeepAliveInterval = -1 * time.Second }},
		{"etcd.election_timeout", func(c *Config) {
			c.Etcd.HeartbeatInterval = 200 * time.Millisecond
			c.Etcd.ElectionTimeout = 500 * time.Millisecond
		}},
		{"etcd.heartbeat_interval", func(c *Config) { c.Etcd.HeartbeatInterval = time.Millisecond }},
		{"etcd.mode", func(c *Config) { c.Etcd.Mode = "sideways" }},
		{"etcd.endpoints", func(c *Config) { c.Etcd.Mode = EtcdExternal }},
		{"etcd.endpoints", func(c *Config) { c.Etcd.Mode = EtcdExternal; c.Etcd.Endpoints = []string{"http://127.0.0.1:2379"} }},
		{"etcd.mode", func(c *Config) {
			c.Etcd.Mode = EtcdExternal
			c.Etcd.Endpoints = []string{"https://127.0.0.1:2379"}
			c.Etcd.InitialCluster = "n1=https://127.0.0.1:2380"
		}},
		{"etcd.peer_addr", func(c *Config) { c.Etcd.PeerAddr = c.Etcd.ClientAddr }},
		{"etcd.client_addr", func(c *Config) { c.Etcd.ClientAddr = "nowhere" }},
		{"etcd.initial_cluster", func(c *Config) { c.Etcd.InitialCluster = "n2=https://127.0.0.1:2380" }},
		{"etcd.initial_cluster", func(c *Config) { c.Etcd.InitialCluster = "n1=https://127.0.0.1:9999" }},
		{"etcd.initial_cluster", func(c *Config) { c.Etcd.InitialCluster = "n1" }},
		{"etcd.join", func(c *Config) {
			c.Etcd.InitialCluster = "n1=https://127.0.0.1:2380"
			c.Etcd.Join = "https://127.0.0.1:2379"
		}},
		{"tls.auto_dir", func(c *Config) { c.TLS.CAFile = "x"; c.TLS.AutoDir = "y" }},
		{"tls.cert_file", func(c *Config) { c.TLS.CAFile = os.Args[0] }},
		{"admin.addr", func(c *Config) { c.Admin.Addr = "7080" }},
		{"web.max_cached_locks", func(c *Config) { c.Web.MaxCachedLocks = -1 }},
		{"web.loopback_send_buffer", func(c *Config) { n := -1; c.Web.LoopbackSendBuffer = &n }},
		{"web.write_behind", func(c *Config) { n := 65<<20 + 1; c.Web.WriteBehind = &n }},
		{"web.send_timeout", func(c *Config) { c.Web.SendTimeout = time.Hour + time.Second }},
		{"web.send_timeout", func(c *Config) { c.Web.SendTimeout = -2 }},
	}
	for _, tc := range cases {
		c := validBase()
		tc.mod(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: want a field error, got %v", tc.field, err)
			continue
		}
		if fe.Field != tc.field {
			t.Errorf("want field %s, got %s (%v)", tc.field, fe.Field, err)
		}
	}
}

func TestLoadFileOverlaysBlocksOnDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "n.hcl")
	os.WriteFile(p, []byte(`
node_name = "n2"
data_dir  = "/var/lib/shoal/n2"
profile   = "fast"
etcd {
  initial_cluster = "n1=https://127.0.0.1:2380,n2=https://127.0.0.2:2380"
  peer_addr       = "127.0.0.2:2380"
}
lease {
  ttl = "3s"
}
web {
  max_cached_locks     = 8000
  loopback_send_buffer = 0
  write_behind         = 0
  send_timeout         = "off"
}
`), 0o644)
	c, err := LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Etcd.ClientAddr != "127.0.0.1:2379" || c.Admin.Addr != "127.0.0.1:7080" {
		t.Fatalf("defaults lost: client %q admin %q", c.Etcd.ClientAddr, c.Admin.Addr)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Web.MaxCachedLocks != 8000 {
		t.Fatalf("web.max_cached_locks read as %d", c.Web.MaxCachedLocks)
	}
	if b := c.Web.LoopbackSendBuffer; b == nil || *b != 0 {
		t.Fatalf("web.loopback_send_buffer = 0 read as %v, want set to 0 (the kernel's sizing)", b)
	}
	if b := c.Web.WriteBehind; b == nil || *b != 0 {
		t.Fatalf("web.write_behind = 0 read as %v, want set to 0 (no queue)", b)
	}
	if c.Web.SendTimeout != SendTimeoutOff {
		t.Fatalf("web.send_timeout = \"off\" read as %v", c.Web.SendTimeout)
	}
	if c.LeaseTTL() != 3*time.Second || c.KeepAliveInterval() != 250*time.Millisecond {
		t.Fatalf("ttl %s keepalive %s", c.LeaseTTL(), c.KeepAliveInterval())
	}
	os.WriteFile(p, []byte("node_name = \"n2\"\nlease { ttl = [3] }\n"), 0o644)
	if _, err := LoadFile(p); err == nil || !strings.Contains(err.Error(), "n.hcl:2") {
		t.Fatalf("wrong type not reported with its line: %v", err)
	}
	os.WriteFile(p, []byte("node_name = \"n2\"\ndata_dir = \"/x\"\nlease { ttl = 3 }\n"), 0o644)
	if _, err := LoadFile(p); err == nil || !strings.Contains(err.Error(), `n.hcl:3`) || !strings.Contains(err.Error(), `lease.ttl: "3" is not a duration`) {
		t.Fatalf("unitless TTL accepted when the file is read: %v", err)
	}
	for _, bad := range []string{"nodename = \"x\"\n", "etcd {\n  mode_x = \"y\"\n}\n", "lease {}\nlease {}\n", "volume { slot = 1.5 }\n"} {
		os.WriteFile(p, []byte(bad), 0o644)
		if _, err := LoadFile(p); err == nil || !strings.Contains(err.Error(), "n.hcl:") {
			t.Errorf("%q: accepted or no position: %v", bad, err)
		}
	}
}

// TestFileSetsFalseAndOff: what the file says wins over the default even
// when it is false, and "off" turns the failure detector off.
func TestFileSetsFalseAndOff(t *testing.T) {
	p := filepath.Join(t.TempDir(), "n.hcl")
	for _, v := range []bool{true, false} {
		os.WriteFile(p, []byte(fmt.Sprintf("log_json = %v\nadmin {\n  debug = %v\n}\nvolume {\n  detect_timeout = \"off\"\n}\n", v, v)), 0o644)
		c, err := LoadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if c.LogJSON != v || c.Admin.Debug != v {
			t.Fatalf("log_json = %v read as %v, debug as %v", v, c.LogJSON, c.Admin.Debug)
		}
		if _, timeout := c.Detect(); timeout != 0 {
			t.Fatalf("detect_timeout = \"off\" read as %s", timeout)
		}
	}
}

// The documented sample configuration must stay valid.
func TestSampleConfigIsValid(t *testing.T) {
	c, err := LoadFile("../fixtures/config/node.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Volume.Legs) != 2 || c.Volume.Slot == nil || *c.Volume.Slot != 0 || c.Etcd.InitialCluster == "" {
		t.Fatalf("sample not read whole: %+v", c.Volume)
	}
}
