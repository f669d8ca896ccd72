// Command lockctl inspects and exercises Shoal's distributed lock manager.
// It reaches etcd through --endpoints and the TLS flags, or takes them and
// the cluster prefix from a node's configuration file with --config.
//
//	lockctl ls [--node N] [--resource-prefix P] [--volume V --range A-B] [--json]
//	lockctl show RESOURCE [--json]
//	lockctl graph [--json]
//	lockctl watch [--json]
//	lockctl acquire RESOURCE MODE [--hold 30s]   (then type "convert MODE" or "release")
//	lockctl force-release REQUEST-ID [--yes]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/clidoc"
	"github.com/shoal-ha/shoal/internal/etcdprobe"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/internal/lease"
)

type options struct {
	config               string
	endpoints            []string
	cacert, cert, key    string
	prefix               string
	json                 bool
	timeout              time.Duration
	node, resPrefix, vol string
	rng                  string
	hold                 time.Duration
	yes                  bool
	name                 string
	election             time.Duration
}

func main() {
	if err := newRoot(os.Stdout, os.Stdin).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lockctl:", err)
		os.Exit(1)
	}
}

func newRoot(out io.Writer, in io.Reader) *cobra.Command {
	o := &options{}
	root := &cobra.Command{Use: "lockctl", Short: "Inspect and exercise Shoal's distributed lock manager", SilenceUsage: true, SilenceErrors: true}
	pf := root.PersistentFlags()
	pf.StringVar(&o.config, "config", "", "node configuration file (HCL) to take the etcd endpoints, TLS files and cluster prefix from; flags given explicitly win")
	pf.StringSliceVar(&o.endpoints, "endpoints", []string{"127.0.0.1:2379"}, "etcd endpoints")
	pf.StringVar(&o.cacert, "cacert", "", "CA certificate file for etcd TLS")
	pf.StringVar(&o.cert, "cert", "", "client certificate file for etcd TLS")
	pf.StringVar(&o.key, "key", "", "client key file for etcd TLS")
	pf.StringVar(&o.prefix, "prefix", cluster.DefaultConfig().Prefix(), "cluster key prefix")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return o.applyConfig(cmd) }
	pf.DurationVar(&o.election, "election-timeout", lease.DefaultElection, "the etcd cluster's raft election timeout (taken from --config); sets the shortest lease TTL that rides out a leader change")
	pf.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	pf.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout for reading the lock table")

	ls := &cobra.Command{Use: "ls", Short: "List resources, holders, modes, tokens and waiters", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runLs(cmd.Context(), o, out) }}
	ls.Flags().StringVar(&o.node, "node", "", "only locks of this node")
	ls.Flags().StringVar(&o.resPrefix, "resource-prefix", "", "only resources whose name starts with this")
	ls.Flags().StringVar(&o.vol, "volume", "", "only regions of this volume")
	ls.Flags().StringVar(&o.rng, "range", "", "with --volume: only regions overlapping START-END")

	show := &cobra.Command{Use: "show RESOURCE", Short: "Show one resource (NAME or VOLUME@START-END)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error { return runShow(cmd.Context(), o, out, a[0]) }}
	graph := &cobra.Command{Use: "graph", Short: "Show the wait-for graph, cycles flagged", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runGraph(cmd.Context(), o, out) }}
	watch := &cobra.Command{Use: "watch", Short: "Stream grants, conversions, callbacks, releases and recoveries", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runWatch(cmd.Context(), o, out) }}
	acq := &cobra.Command{Use: "acquire RESOURCE MODE", Short: "Hold a lock until Ctrl-C, --hold or a typed \"release\"; \"convert MODE\" converts it", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error { return runAcquire(cmd.Context(), o, out, in, a[0], a[1]) }}
	acq.Flags().DurationVar(&o.hold, "hold", 0, "release after this long (0: until Ctrl-C or \"release\")")
	acq.Flags().StringVar(&o.name, "name", "", "member name (default lockctl-HOST-PID)")
	force := &cobra.Command{Use: "force-release REQUEST-ID", Short: "Remove a request whose owner is gone, leaving a record in etcd", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error { return runForce(cmd.Context(), o, out, in, a[0]) }}
	force.Flags().BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	recs := &cobra.Command{Use: "recoveries", Short: "List recoveries of dead nodes: node, step, since when, attempts, last error", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRecoveries(cmd.Context(), o, out, true) }}
	root.AddCommand(ls, show, graph, watch, acq, force, recs, clidoc.ManCommand())
	return root
}

// applyConfig fills the connection settings from a node's configuration
// file, unless the matching flags were given.
func (o *options) applyConfig(cmd *cobra.Command) error {
	if o.config == "" {
		return nil
	}
	cfg, err := cluster.LoadFile(o.config)
	if err != nil {
		return err
	}
	set := func(name string) bool { return cmd.Flags().Changed(name) }
	if !set("prefix") {
		o.prefix = cfg.Prefix()
	}
	if !set("election-timeout") {
		// The file's election timeout, or its profile's.
		o.election = cfg.ElectionTimeout()
	}
	if !set("endpoints") {
		if cfg.EtcdMode() == cluster.EtcdExternal {
			o.endpoints = cfg.Etcd.Endpoints
		} else {
			o.endpoints = []string{"https://" + cfg.Etcd.ClientAddr}
		}
	}
	if !set("cacert") && !set("cert") && !set("key") {
		o.cacert, o.cert, o.key = cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile
		if o.cacert == "" && cfg.TLS.AutoDir != "" {
			// The node issues itself certificates from a local CA; issue
			// one for lockctl from the same CA.
			dir, err := os.MkdirTemp("", "lockctl-tls-")
			if err != nil {
				return err
			}
			files, err := cluster.IssueCert(cfg.TLS.AutoDir, dir, "lockctl", []string{"127.0.0.1", "localhost"})
			if err != nil {
				return fmt.Errorf("issuing a lockctl certificate from %s: %w", cfg.TLS.AutoDir, err)
			}
			o.cacert, o.cert, o.key = files.CA, files.Cert, files.Key
		}
	}
	return nil
}

// clientMargin is lockctl's self-fence margin.
const clientMargin = time.Second

// leaseConfig is the lease lockctl holds its locks with: the timing comes
// from the rule every node's configuration follows (lease.Timing.Check),
// for the cluster's election timeout, so one leader election cannot cost
// lockctl its lease.
func (o *options) leaseConfig(cli *clientv3.Client, name string) dlm.LeaseMemberConfig {
	t := lease.ClientTiming(o.election, clientMargin)
	return dlm.LeaseMemberConfig{Client: cli, Prefix: o.prefix, Name: name, TTL: t.TTL, Margin: t.Margin,
		KeepAlive: t.KeepAlive, KeepAliveTimeout: t.KeepAliveTimeout, ElectionTimeout: t.Election}
}

// interruptible connects for a command that runs until Ctrl-C or
// SIGTERM: the returned context ends on either, and done closes the
// client and stops listening for the signals.
func (o *options) interruptible(ctx context.Context) (context.Context, *clientv3.Client, func(), error) {
	if ctx == nil {
		ctx = context.Background()
	}
	cli, err := o.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	return ctx, cli, func() { stop(); _ = cli.Close() }, nil
}

func (o *options) client() (*clientv3.Client, error) {
	if len(o.endpoints) == 0 {
		return nil, errors.New("no etcd endpoints (use --endpoints or --config)")
	}
	cfg := clientv3.Config{Endpoints: o.endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if o.cacert != "" || o.cert != "" || o.key != "" {
		info := transport.TLSInfo{TrustedCAFile: o.cacert, CertFile: o.cert, KeyFile: o.key}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("TLS files: %w", err)
		}
		cfg.TLS = tc
	}
	// Say at once why etcd cannot be used, instead of waiting out the
	// timeout with "context deadline exceeded".
	ctx, cancel := context.WithTimeout(context.Background(), 3*etcdprobe.Timeout)
	defer cancel()
	if err := etcdprobe.Check(ctx, o.endpoints, cfg.TLS); err != nil {
		switch {
		case errors.Is(err, etcdprobe.ErrTLSRequired):
			return nil, fmt.Errorf("%w: give --config with a node's configuration file (or --cacert, --cert and --key)", err)
		case errors.Is(err, etcdprobe.ErrTLS):
			return nil, fmt.Errorf("%w: use certificates of the cluster's CA (--config with a node's configuration file)", err)
		}
		return nil, err
	}
	return clientv3.New(cfg)
}

func (o *options) load(ctx context.Context) (*dlm.Replica, *clientv3.Client, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	cli, err := o.client()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rep, _, err := dlm.LoadTable(ctx, cli, o.prefix)
	if err != nil {
		cli.Close()
		return nil, nil, fmt.Errorf("%w (etcd endpoints %s, prefix %s)", err, strings.Join(o.endpoints, ","), o.prefix)
	}
	return rep, cli, nil
}

func (o *options) filter(locks []dlm.LockInfo) ([]dlm.LockInfo, error) {
	var lo, hi uint64
	if o.rng != "" {
		if o.vol == "" {
			return nil, errors.New("--range needs --volume")
		}
		a, b, ok := strings.Cut(o.rng, "-")
		var err1, err2 error
		lo, err1 = strconv.ParseUint(a, 10, 64)
		hi, err2 = strconv.ParseUint(b, 10, 64)
		if !ok || err1 != nil || err2 != nil || hi <= lo {
			return nil, fmt.Errorf("bad --range %q: want START-END in bytes with END > START", o.rng)
		}
	}
	var out []dlm.LockInfo
	for _, l := range locks {
		switch {
		case o.node != "" && l.Owner.Node != o.node:
		case o.resPrefix != "" && !strings.HasPrefix(l.Resource.String(), o.resPrefix):
		case o.vol != "" && l.Resource.Volume != o.vol:
		case o.rng != "" && !l.Resource.Overlaps(dlm.Region(o.vol, lo, hi)):
		default:
			out = append(out, l)
		}
	}
	return out, nil
}

func runLs(ctx context.Context, o *options, out io.Writer) error {
	// Bad filters are refused before anything is read.
	if _, err := o.filter(nil); err != nil {
		return err
	}
	rep, cli, err := o.load(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	locks, err := o.filter(rep.Table.Locks())
	if err != nil {
		return err
	}
	if err := printLocks(out, o.json, locks, rep.Table.Revision()); err != nil || o.json {
		return err
	}
	// A dead node's locks stay orphaned until its recovery releases them:
	// say which recoveries are under way (lockctl recoveries has them all).
	return runRecoveries(ctx, o, out, false)
}

// runRecoveries lists the recovery records: all of them (with --json, or
// when all is set), or only those in progress after a lock listing.
func runRecoveries(ctx context.Context, o *options, out io.Writer, all bool) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cli, err := o.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	recs, err := recovery.List(rctx, cli, o.prefix)
	if err != nil {
		return fmt.Errorf("reading recoveries: %w", err)
	}
	if o.json && all {
		if recs == nil {
			recs = []recovery.Record{}
		}
		return json.NewEncoder(out).Encode(recs)
	}
	if !all {
		recs = recovery.InProgress(recs)
		if len(recs) == 0 {
			return nil
		}
		fmt.Fprintln(out, "\nRECOVERIES IN PROGRESS")
	}
	return recovery.WriteTable(out, recs, time.Now())
}

func printLocks(out io.Writer, asJSON bool, locks []dlm.LockInfo, rev int64) error {
	if asJSON {
		if locks == nil {
			locks = []dlm.LockInfo{}
		}
		return json.NewEncoder(out).Encode(locks)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE\tOWNER\tSTATE\tMODE\tTOKEN\tAGE(revs)\tFLAGS\tID")
	for _, l := range locks {
		state, mode := "held", l.Granted.String()
		if !l.Held {
			state, mode = "waiting", l.Want.String()
		} else if l.Want != l.Granted {
			state, mode = "converting", l.Granted.String()+"->"+l.Want.String()
		}
		var flags []string
		if l.Orphan {
			flags = append(flags, "orphan")
		}
		if l.Recovery {
			flags = append(flags, "recovery")
		}
		if l.Blocking {
			flags = append(flags, "blocking:"+l.BlockingMode.String())
		}
		tok := "-"
		if l.Held {
			tok = l.Token.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", l.Resource, l.Owner, state, mode, tok, rev-l.QueuedRev, strings.Join(flags, ","), l.ID)
	}
	return tw.Flush()
}

func runShow(ctx context.Context, o *options, out io.Writer, arg string) error {
	res, err := dlm.ParseResource(arg)
	if err != nil {
		return err
	}
	rep, cli, err := o.load(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	var locks []dlm.LockInfo
	for _, l := range rep.Table.Locks() {
		if l.Resource.Overlaps(res) {
			locks = append(locks, l)
		}
	}
	if !rep.Table.Known(res) {
		return fmt.Errorf("unknown resource %s: nobody holds or waits for it and no value block was written (lockctl ls lists what is locked)", res)
	}
	lvb, valid := rep.Table.LVB(res)
	if o.json {
		return json.NewEncoder(out).Encode(map[string]any{"resource": res, "locks": locks, "lvb": lvb, "lvb_valid": valid})
	}
	if len(locks) == 0 {
		fmt.Fprintf(out, "%s: no holders or waiters\n", res)
	} else if err := printLocks(out, false, locks, rep.Table.Revision()); err != nil {
		return err
	}
	fmt.Fprintf(out, "value block: valid=%v %q\n", valid, strings.TrimRight(string(lvb), "\x00"))
	return nil
}

func runGraph(ctx context.Context, o *options, out io.Writer) error {
	rep, cli, err := o.load(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	edges := rep.Table.WaitFor()
	cycles := dlm.OwnerCycles(edges)
	victims := rep.Table.DeadlockVictims()
	if o.json {
		if edges == nil {
			edges = []dlm.WaitEdge{}
		}
		return json.NewEncoder(out).Encode(map[string]any{"edges": edges, "cycles": cycles, "victims": victims})
	}
	if len(edges) == 0 {
		fmt.Fprintln(out, "no waiters")
		return nil
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAITER\tWAITS FOR\tWHY\tRESOURCE")
	for _, e := range edges {
		why := "holds incompatible"
		if e.Queued {
			why = "queued ahead"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.WaiterOwner, e.HolderOwner, why, e.Resource)
	}
	tw.Flush()
	for _, c := range cycles {
		var s []string
		for _, x := range c {
			s = append(s, x.String())
		}
		fmt.Fprintf(out, "CYCLE (possible deadlock): %s\n", strings.Join(s, " -> "))
	}
	for _, v := range victims {
		fmt.Fprintf(out, "VICTIM (fails with a deadlock error once the cycle outlasts the grace period): %s\n", v)
	}
	return nil
}

func runWatch(ctx context.Context, o *options, out io.Writer) error {
	ctx, cli, done, err := o.interruptible(ctx)
	if err != nil {
		return err
	}
	defer done()
	lctx, cancel := context.WithTimeout(ctx, o.timeout)
	rep, rev, err := dlm.LoadTable(lctx, cli, o.prefix)
	cancel()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	wch := cli.Watch(ctx, keys.Of(o.prefix).All(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	if !o.json {
		fmt.Fprintf(out, "# watching the lock table after revision %d (%d requests)\n", rev, len(rep.Table.Locks()))
	}
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			ds, err := rep.Apply(ev)
			if err != nil {
				fmt.Fprintln(os.Stderr, "lockctl: ignoring event:", err)
			}
			key := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete && strings.HasPrefix(key, keys.Of(o.prefix).DLMRequests()) {
				if o.json {
					_ = enc.Encode(map[string]any{"kind": "release", "id": key, "revision": ev.Kv.ModRevision})
				} else {
					fmt.Fprintf(out, "%d release %s\n", ev.Kv.ModRevision, key)
				}
			}
			if rest, ok := strings.CutPrefix(key, keys.Of(o.prefix).DLMRecovered()); ok && ev.Type == clientv3.EventTypePut {
				fmt.Fprintf(out, "%d recovery-released %s %s\n", ev.Kv.ModRevision, rest, ev.Kv.Value)
			}
			for _, d := range ds {
				if o.json {
					_ = enc.Encode(map[string]any{"kind": d.Kind.String(), "id": d.ID, "owner": d.Owner, "resource": d.Resource.String(), "mode": d.Mode, "token": d.Token, "revision": ev.Kv.ModRevision})
				} else {
					fmt.Fprintf(out, "%d %s\n", ev.Kv.ModRevision, d)
				}
			}
		}
	}
	return nil
}

func runAcquire(ctx context.Context, o *options, out io.Writer, in io.Reader, resArg, modeArg string) error {
	res, err := dlm.ParseResource(resArg)
	if err != nil {
		return err
	}
	mode, err := dlm.ParseMode(modeArg)
	if err != nil {
		return err
	}
	ctx, cli, done, err := o.interruptible(ctx)
	if err != nil {
		return err
	}
	defer done()
	name := o.name
	if name == "" {
		host, _ := os.Hostname()
		name = fmt.Sprintf("lockctl-%s-%d", host, os.Getpid())
	}
	m, err := dlm.JoinAsClient(ctx, o.leaseConfig(cli, name))
	if err != nil {
		return err
	}
	defer m.Leave(context.Background())
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix, cfg.CacheLocks = cli, m, o.prefix, false
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close(context.Background())
	fmt.Fprintf(out, "waiting for %s %s as %s...\n", res, mode, n.Owner())
	l, err := n.Acquire(ctx, res, mode)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "granted %s %s token=%s\n", res, mode, l.Token())
	var timeout <-chan time.Time
	if o.hold > 0 {
		timeout = time.After(o.hold)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "releasing")
			return l.Release()
		case <-timeout:
			fmt.Fprintln(out, "hold time over; releasing")
			return l.Release()
		case <-n.Lost():
			return fmt.Errorf("lock lost: %w", n.Err())
		case s, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			f := strings.Fields(s)
			switch {
			case len(f) == 1 && f[0] == "release":
				return l.Release()
			case len(f) == 2 && f[0] == "convert":
				m, err := dlm.ParseMode(f[1])
				if err != nil {
					fmt.Fprintln(out, err)
					continue
				}
				if err := l.Convert(ctx, m); err != nil {
					return err
				}
				// A down-conversion returns at once; the node then converts
				// its grant in the cluster: print the token of that grant.
				sctx, cancel := context.WithTimeout(ctx, o.timeout)
				err = l.Settle(sctx)
				cancel()
				if err != nil {
					return fmt.Errorf("waiting for the cluster to take the conversion: %w", err)
				}
				fmt.Fprintf(out, "converted to %s token=%s\n", l.Mode(), l.Token())
			case len(f) == 0:
			default:
				fmt.Fprintln(out, `commands: "convert MODE", "release"`)
			}
		}
	}
}

func runForce(ctx context.Context, o *options, out io.Writer, in io.Reader, id string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	rep, cli, err := o.load(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	l, ok := rep.Table.Lock(id)
	if !ok {
		return fmt.Errorf("no request %q (see lockctl ls for IDs)", id)
	}
	if rep.Alive(l.Owner) {
		return fmt.Errorf("owner %s of %s is a live member; force-release is only for owners that are gone", l.Owner, id)
	}
	if !o.yes {
		fmt.Fprintf(out, "force-release %s (%s %s of %s)? type yes: ", id, l.Resource, l.Granted, l.Owner)
		ans, _ := bufio.NewReader(in).ReadString('\n')
		if strings.TrimSpace(ans) != "yes" {
			return errors.New("not confirmed")
		}
	}
	host, _ := os.Hostname()
	if _, err := dlm.ForceRelease(ctx, cli, o.prefix, id, fmt.Sprintf("lockctl@%s at %s", host, time.Now().UTC().Format(time.RFC3339))); err != nil {
		return err
	}
	fmt.Fprintf(out, "released %s; recorded under %s\n", id, keys.Of(o.prefix).DLMForced())
	return nil
}
