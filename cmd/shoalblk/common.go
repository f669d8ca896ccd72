package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/blockdev/mirror/etcdstate"
	"github.com/shoal-ha/shoal/blockdev/mirror/fcntllock"
	"github.com/shoal-ha/shoal/internal/etcdprobe"
)

// volumeFlags are the flags of every command that opens a volume.
type volumeFlags struct {
	etcd       string
	etcdPrefix string
	etcdCA     string
	etcdCert   string
	etcdKey    string
	lockDir    string
	jsonOut    bool
	verbose    bool
	rate       string
	allowMiss  bool
	// readOnly commands (status, check) open every leg read-only and
	// never write to a leg or to etcd.
	readOnly bool
	// cmd is the command the flags belong to; logs and notes go to its
	// error writer.
	cmd *cobra.Command
}

func (f *volumeFlags) register(c *cobra.Command, withJSON bool) {
	f.cmd = c
	c.Flags().StringVar(&f.etcd, "etcd", "", "with LEGs: comma-separated etcd endpoints holding the cluster-wide leg table, for a stopped cluster whose (external) etcd still runs (default: superblocks only); a running cluster is asked with --config/--admin instead")
	c.Flags().StringVar(&f.etcdPrefix, "etcd-prefix", "/shoal", "etcd key prefix")
	c.Flags().StringVar(&f.etcdCA, "etcd-cacert", "", "CA certificate file for etcd TLS (a Shoal cluster's etcd is mutual TLS)")
	c.Flags().StringVar(&f.etcdCert, "etcd-cert", "", "client certificate file for etcd TLS, signed by the cluster's CA")
	c.Flags().StringVar(&f.etcdKey, "etcd-key", "", "client key file for etcd TLS")
	c.Flags().StringVar(&f.lockDir, "lock-dir", "", "directory of region lock files shared with processes on this host (default: no cross-process locking)")
	c.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "log what the volume does to stderr")
	if f.readOnly {
		c.Flags().BoolVar(&f.allowMiss, "allow-missing", false, "go on without legs that the leg table counts live but that were not given nor found at their addresses (they are reported, not changed)")
	} else {
		c.Flags().BoolVar(&f.allowMiss, "allow-missing", false, "mark legs that the leg table counts live but that were not given nor found at their addresses as failed, cluster-wide")
	}
	if withJSON {
		c.Flags().BoolVar(&f.jsonOut, "json", false, "print JSON")
	}
}

// stderr is the command's error writer (standard error in the process).
func (f *volumeFlags) stderr() io.Writer {
	if f.cmd == nil {
		return os.Stderr
	}
	return f.cmd.ErrOrStderr()
}

// logger logs to stderr only with -v: what an operator needs is in the
// command's output and its error.
func (f *volumeFlags) logger() hclog.Logger {
	level := hclog.Off
	if f.verbose {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: "shoalblk", Level: level, Output: f.stderr()})
}

// openLegs opens every address; missing files are an error.
func openLegs(ctx context.Context, addrs []string, log hclog.Logger, readOnly bool) ([]blockdev.Device, error) {
	var devs []blockdev.Device
	for _, a := range addrs {
		d, err := blockdev.Open(ctx, a, blockdev.OpenOptions{Logger: log, ReadOnly: readOnly})
		if err != nil {
			for _, x := range devs {
				x.Close()
			}
			return nil, err
		}
		devs = append(devs, d)
	}
	return devs, nil
}

// openVolume opens the volume over addrs as a tool (no node slot) unless
// slot is given.
func (f *volumeFlags) openVolume(ctx context.Context, addrs []string, slot int, allowMissing bool, progress func(mirror.Progress)) (*mirror.Volume, func(), error) {
	if len(addrs) == 0 {
		return nil, nil, fmt.Errorf("no legs given")
	}
	var rate int64
	if f.rate != "" {
		r, err := parseSize(f.rate)
		if err != nil {
			return nil, nil, fmt.Errorf("--rate: %w", err)
		}
		rate = r
	}
	store, cleanup, err := f.etcdStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	log := f.logger()
	devs, err := openLegs(ctx, addrs, log, f.readOnly)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	cfg := mirror.DefaultConfig(slot)
	cfg.Legs, cfg.Logger, cfg.AllowMissingLegs, cfg.Progress = devs, log, allowMissing || f.allowMiss, progress
	cfg.ReadOnly, cfg.ResyncRate, cfg.Store = f.readOnly, rate, store
	if f.lockDir != "" {
		cfg.Locker = fcntllock.New(f.lockDir)
	}
	v, err := mirror.Open(ctx, cfg)
	if err != nil {
		for _, d := range devs {
			d.Close()
		}
		cleanup()
		if errors.Is(err, mirror.ErrMissingLeg) {
			if f.readOnly {
				return nil, nil, fmt.Errorf("%w; give every leg, or --allow-missing to look without the missing ones (nothing is changed)", err)
			}
			return nil, nil, fmt.Errorf("%w; give every leg, or --allow-missing to mark the missing ones failed for the whole cluster", err)
		}
		return nil, nil, err
	}
	return v, func() {
		if err := v.Close(); err != nil {
			fmt.Fprintln(f.stderr(), "shoalblk: close:", err)
		}
		cleanup()
	}, nil
}

// resumeCommand is the command line that runs cmd again with flag set to
// value: every flag the user set, then the arguments, each quoted for a
// POSIX shell where needed.
func resumeCommand(cmd *cobra.Command, args []string, flag, value string) string {
	parts := []string{cmd.CommandPath()}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name == flag {
			return
		}
		if f.Value.Type() == "bool" {
			if f.Value.String() == "true" {
				parts = append(parts, "--"+f.Name)
			} else {
				parts = append(parts, "--"+f.Name+"="+f.Value.String())
			}
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				parts = append(parts, "--"+f.Name, shellQuote(v))
			}
			return
		}
		parts = append(parts, "--"+f.Name, shellQuote(f.Value.String()))
	})
	parts = append(parts, "--"+flag, shellQuote(value))
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// etcdStore connects to --etcd, if given, after checking that etcd takes
// the connection (a TLS refusal is said at once); nil store otherwise.
func (f *volumeFlags) etcdStore(ctx context.Context) (mirror.LegStateStore, func(), error) {
	if f.etcd == "" {
		return nil, func() {}, nil
	}
	ecfg := clientv3.Config{Endpoints: strings.Split(f.etcd, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if f.etcdCA != "" || f.etcdCert != "" || f.etcdKey != "" {
		info := transport.TLSInfo{TrustedCAFile: f.etcdCA, CertFile: f.etcdCert, KeyFile: f.etcdKey}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, nil, fmt.Errorf("etcd TLS files: %w", err)
		}
		ecfg.TLS = tc
	}
	if err := etcdprobe.Check(ctx, ecfg.Endpoints, ecfg.TLS); err != nil {
		if errors.Is(err, etcdprobe.ErrTLSRequired) || errors.Is(err, etcdprobe.ErrTLS) {
			return nil, nil, fmt.Errorf("--etcd: %w; give --etcd-cacert, --etcd-cert and --etcd-key of the cluster's CA", err)
		}
		return nil, nil, fmt.Errorf("--etcd: %w", err)
	}
	cli, err := clientv3.New(ecfg)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: %w", err)
	}
	return etcdstate.New(cli, f.etcdPrefix), func() { cli.Close() }, nil
}

// parseSize reads "1073741824", "512K", "1M", "10G", "1T".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	if v > (1<<62)/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return v * mult, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress shows mirror progress on w: as a bar on a terminal and as plain
// lines (at most one per second, plus the last) otherwise.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	bar   *progressbar.ProgressBar
	op    string
	last  time.Time
	quiet bool
}

func newProgress(w io.Writer, quiet bool) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd())), quiet: quiet}
}

func (p *progress) update(pr mirror.Progress) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	label := pr.Op
	if pr.Leg != "" {
		label += " leg " + pr.Leg
	}
	if p.tty {
		if p.bar == nil || p.op != label {
			if p.bar != nil {
				p.bar.Finish()
				fmt.Fprintln(p.w)
			}
			p.bar = progressbar.NewOptions64(pr.Total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(label),
				progressbar.OptionShowCount(), progressbar.OptionSetItsString("regions"), progressbar.OptionShowIts(), progressbar.OptionThrottle(100*time.Millisecond))
			p.op = label
		}
		p.bar.Set64(pr.Done)
		return
	}
	now := time.Now()
	if pr.Done < pr.Total && now.Sub(p.last) < time.Second {
		return
	}
	p.last = now
	pct := 100.0
	if pr.Total > 0 {
		pct = float64(pr.Done) * 100 / float64(pr.Total)
	}
	fmt.Fprintf(p.w, "%s: %d/%d (%.1f%%)\n", label, pr.Done, pr.Total, pct)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprintln(p.w)
		p.bar = nil
	}
}

func fcntlLocker(dir string) mirror.RegionLocker { return fcntllock.New(dir) }
