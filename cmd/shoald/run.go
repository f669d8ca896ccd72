package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/httpmetrics"
	"github.com/shoal-ha/shoal/node"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// nodeFlags are the flags that override fields of the configuration file.
type nodeFlags struct {
	config string
	cfg    cluster.Config
	slot   int
	// durs holds the duration flags as given, by flag name; they are
	// typed in load, where a bad one is a configuration error.
	durs map[string]*string
}

// durFields names the configuration field of each duration flag.
var durFields = map[string]string{
	"heartbeat-interval": "etcd.heartbeat_interval",
	"election-timeout":   "etcd.election_timeout",
	"lease-ttl":          "lease.ttl",
	"keepalive-interval": "lease.keepalive_interval",
	"self-fence-margin":  "lease.self_fence_margin",
}

func (f *nodeFlags) dur(name string) *string {
	if f.durs == nil {
		f.durs = map[string]*string{}
	}
	p := new(string)
	f.durs[name] = p
	return p
}

// setDur types the duration flag name into dst when it was given.
func (f *nodeFlags) setDur(fs *pflag.FlagSet, name string, dst *time.Duration) error {
	if !fs.Changed(name) {
		return nil
	}
	v := *f.durs[name]
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return &exitError{code: 2, err: fmt.Errorf("%w: %w", cluster.ErrInvalidConfig, &cluster.FieldError{Field: durFields[name], Msg: fmt.Sprintf("%q is not a duration (write it like 250ms or 3s)", v)})}
	}
	*dst = d
	return nil
}

func addNodeFlags(fs *pflag.FlagSet, f *nodeFlags) {
	c := &f.cfg
	fs.StringVarP(&f.config, "config", "c", "", "HCL configuration file")
	fs.StringVar(&c.NodeName, "name", "", "node name (node_name)")
	fs.StringVar(&c.ClusterName, "cluster", "", "cluster name (cluster_name)")
	fs.StringVar(&c.DataDir, "data-dir", "", "data directory (data_dir)")
	fs.StringVar(&c.Profile, "profile", "", "timing profile: fast or production (profile)")
	fs.StringVar(&c.LogLevel, "log-level", "", "trace, debug, info, warn or error (log_level)")
	fs.BoolVar(&c.LogJSON, "log-json", false, "log as JSON (log_json)")
	fs.BoolVar(&c.ReusePort, "reuse-port", false, "bind the etcd and admin listeners with SO_REUSEPORT, to take ports a supervisor reserved (reuse_port)")
	fs.StringVar(&c.Etcd.Mode, "etcd-mode", "", "embedded or external (etcd.mode)")
	fs.StringVar(&c.Etcd.ClientAddr, "client-addr", "", "embedded member's client host:port (etcd.client_addr)")
	fs.StringVar(&c.Etcd.PeerAddr, "peer-addr", "", "embedded member's peer host:port (etcd.peer_addr)")
	fs.StringVar(&c.Etcd.InitialCluster, "initial-cluster", "", "bootstrap members name=https://host:port,... (etcd.initial_cluster)")
	fs.StringVar(&c.Etcd.Join, "join", "", "client URLs of a running cluster to join (etcd.join)")
	fs.StringSliceVar(&c.Etcd.Endpoints, "endpoints", nil, "external etcd client URLs (etcd.endpoints)")
	fs.StringVar(f.dur("heartbeat-interval"), "heartbeat-interval", "", "raft heartbeat (etcd.heartbeat_interval)")
	fs.StringVar(f.dur("election-timeout"), "election-timeout", "", "raft election timeout (etcd.election_timeout)")
	fs.StringVar(&c.TLS.CAFile, "ca-file", "", "CA certificate (tls.ca_file)")
	fs.StringVar(&c.TLS.CertFile, "cert-file", "", "node certificate (tls.cert_file)")
	fs.StringVar(&c.TLS.KeyFile, "key-file", "", "node key (tls.key_file)")
	fs.StringVar(&c.TLS.AutoDir, "tls-auto-dir", "", "local CA directory for generated certificates (tls.auto_dir)")
	fs.StringVar(f.dur("lease-ttl"), "lease-ttl", "", "lease TTL (lease.ttl)")
	fs.StringVar(f.dur("keepalive-interval"), "keepalive-interval", "", "lease renewal period (lease.keepalive_interval)")
	fs.StringVar(f.dur("self-fence-margin"), "self-fence-margin", "", "self-fence margin (lease.self_fence_margin)")
	fs.StringVar(&c.Admin.Addr, "admin-addr", "", "admin HTTP host:port or off (admin.addr)")
	fs.BoolVar(&c.Admin.Debug, "admin-debug", false, "serve the fault-test routes (POST /api/volume/write); never in production (admin.debug)")
	fs.StringVar(&c.Volume.Name, "volume-name", "", "volume name (volume.name)")
	fs.StringSliceVar(&c.Volume.Legs, "volume-legs", nil, "volume legs: paths or iscsi:// URLs (volume.legs)")
	fs.IntVar(&f.slot, "volume-slot", 0, "this node's bitmap slot (volume.slot)")
	fs.StringVar(&c.Volume.Fencing, "fencing", "", "auto, reservations, lease or agent (volume.fencing)")
	fs.StringVar(&c.Volume.FenceAgent, "fence-agent", "", "fence agent command (volume.fence_agent)")
}

// load reads the file (if any) over the defaults and applies the flags
// that were set on the command line, then validates.
func (f *nodeFlags) load(fs *pflag.FlagSet) (cluster.Config, error) {
	cfg := cluster.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = cluster.LoadFile(f.config); err != nil {
			return cfg, &exitError{code: 2, err: err}
		}
	}
	set := func(name string, dst *string, v string) {
		if fs.Changed(name) {
			*dst = v
		}
	}

	c := &f.cfg
	set("name", &cfg.NodeName, c.NodeName)
	set("cluster", &cfg.ClusterName, c.ClusterName)
	set("data-dir", &cfg.DataDir, c.DataDir)
	set("profile", &cfg.Profile, c.Profile)
	set("log-level", &cfg.LogLevel, c.LogLevel)
	if fs.Changed("log-json") {
		cfg.LogJSON = c.LogJSON
	}
	if fs.Changed("reuse-port") {
		cfg.ReusePort = c.ReusePort
	}
	set("etcd-mode", &cfg.Etcd.Mode, c.Etcd.Mode)
	set("client-addr", &cfg.Etcd.ClientAddr, c.Etcd.ClientAddr)
	set("peer-addr", &cfg.Etcd.PeerAddr, c.Etcd.PeerAddr)
	set("initial-cluster", &cfg.Etcd.InitialCluster, c.Etcd.InitialCluster)
	set("join", &cfg.Etcd.Join, c.Etcd.Join)
	if fs.Changed("endpoints") {
		cfg.Etcd.Endpoints = c.Etcd.Endpoints
	}
	if err := f.setDur(fs, "heartbeat-interval", &cfg.Etcd.HeartbeatInterval); err != nil {
		return cfg, err
	}
	if err := f.setDur(fs, "election-timeout", &cfg.Etcd.ElectionTimeout); err != nil {
		return cfg, err
	}
	set("ca-file", &cfg.TLS.CAFile, c.TLS.CAFile)
	set("cert-file", &cfg.TLS.CertFile, c.TLS.CertFile)
	set("key-file", &cfg.TLS.KeyFile, c.TLS.KeyFile)
	set("tls-auto-dir", &cfg.TLS.AutoDir, c.TLS.AutoDir)
	if err := f.setDur(fs, "lease-ttl", &cfg.Lease.TTL); err != nil {
		return cfg, err
	}
	if err := f.setDur(fs, "keepalive-interval", &cfg.Lease.KeepAliveInterval); err != nil {
		return cfg, err
	}
	if err := f.setDur(fs, "self-fence-margin", &cfg.Lease.SelfFenceMargin); err != nil {
		return cfg, err
	}
	set("admin-addr", &cfg.Admin.Addr, c.Admin.Addr)
	if fs.Changed("admin-debug") {
		cfg.Admin.Debug = c.Admin.Debug
	}
	set("volume-name", &cfg.Volume.Name, c.Volume.Name)
	if fs.Changed("volume-legs") {
		cfg.Volume.Legs = c.Volume.Legs
	}
	if fs.Changed("volume-slot") {
		slot := f.slot
		cfg.Volume.Slot = &slot
	}
	set("fencing", &cfg.Volume.Fencing, c.Volume.Fencing)
	set("fence-agent", &cfg.Volume.FenceAgent, c.Volume.FenceAgent)
	if err := cfg.Validate(); err != nil {
		return cfg, &exitError{code: 2, err: err}
	}
	return cfg, nil
}

func newRunCmd() *cobra.Command {
	f := &nodeFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node (the default command)",
		Args:  cobra.NoArgs,
	}
	addNodeFlags(cmd.Flags(), f)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := f.load(cmd.Flags())
		if err != nil {
			return err
		}
		cfg.Logger = cfg.NewLogger(cmd.ErrOrStderr())
		return runNode(cmd.Context(), cfg, func() (cluster.Config, error) { return f.load(cmd.Flags()) })
	}
	return cmd
}

// runNode runs the node until ctx ends (main ends it on SIGTERM or
// SIGINT). SIGHUP reads the configuration again (file and flags) through
// load.
func runNode(ctx context.Context, cfg cluster.Config, load func() (cluster.Config, error)) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	r := &reloader{running: cfg, load: load, log: cfg.Logger}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				r.reload()
			}
		}
	}()
	metrics := webMetrics{httpmetrics.New()}
	parts, err := webParts(cfg, metrics.Wrap)
	if err != nil {
		return err
	}
	if len(parts) > 0 {
		parts = append(parts, metrics)
	}
	return node.Run(ctx, cfg, parts...)
}

// reloader applies a configuration read again on SIGHUP: the fields that
// can change live (cluster.ReloadPlan) take effect at once; the others
// are named in the log as needing a restart, and the running value stays.
type reloader struct {
	mu      sync.Mutex
	running cluster.Config
	load    func() (cluster.Config, error)
	log     hclog.Logger
}

func (r *reloader) reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := r.load()
	if err != nil {
		r.log.Error("configuration reload refused; the running configuration stays", "error", err)
		return
	}
	live, restart := cluster.ReloadPlan(r.running, next)
	for _, f := range live {
		switch f {
		case "log_level":
			r.log.SetLevel(hclog.LevelFromString(next.LogLevel))
			// Seen only when the new level lets debug lines through.
			r.log.Debug("log level changed", "from", r.running.LogLevel, "to", next.LogLevel)
			r.running.LogLevel = next.LogLevel
		}
	}
	if len(live) == 0 && len(restart) == 0 {
		r.log.Info("configuration reloaded: nothing changed")
		return
	}
	none := func(fs []string) string {
		if len(fs) == 0 {
			return "none"
		}
		return strings.Join(fs, ",")
	}
	r.log.Info("configuration reloaded", "applied", none(live), "need_restart", none(restart))
}
