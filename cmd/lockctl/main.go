// Command lockctl inspects and exercises Shoal's distributed lock manager.
//
// Every command that looks at or changes the running cluster goes through
// a node's admin API (HTTPS), with the credentials of the node's
// configuration file (--config) or --cacert/--cert/--key/--token-file, at
// the address of --admin or of --config, moving on to another member when
// that node is down:
//
//	lockctl ls [--node N] [--resource-prefix P] [--volume V --range A-B] [--limit N] [--json]
//	lockctl show RESOURCE [--json]
//	lockctl graph [--json]
//	lockctl watch [--json]
//	lockctl recoveries [--json]
//	lockctl force-release REQUEST-ID [--yes]          (admin role)
//
// acquire is different: it takes part in the lock manager with a lease of
// its own, so that its lock dies with lockctl and not with a node, and it
// talks to etcd (--endpoints and the TLS flags, or the etcd settings of
// --config):
//
//	lockctl acquire RESOURCE MODE [--hold 30s]   (then type "convert MODE" or "release")
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
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
	"github.com/shoal-ha/shoal/internal/adminclient"
	"github.com/shoal-ha/shoal/internal/clidoc"
	"github.com/shoal-ha/shoal/internal/etcdprobe"
	"github.com/shoal-ha/shoal/internal/lease"
	"github.com/shoal-ha/shoal/node"
)

type options struct {
	admin   adminclient.Target
	json    bool
	timeout time.Duration
	query   node.LockQuery
	rng     string
	limit   int
	yes     bool
	// acquire's etcd settings.
	endpoints []string
	prefix    string
	election  time.Duration
	hold      time.Duration
	name      string
}

// defaultLimit bounds ls's table when no --limit is given: a cluster's
// store holds thousands of locks.
const defaultLimit = 40

func main() {
	if err := newRoot(os.Stdout, os.Stdin).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lockctl:", err)
		os.Exit(1)
	}
}

func newRoot(out io.Writer, in io.Reader) *cobra.Command {
	o := &options{}
	root := &cobra.Command{Use: "lockctl", Short: "Inspect and exercise Shoal's distributed lock manager", SilenceUsage: true, SilenceErrors: true,
		Long: `Inspect and exercise Shoal's distributed lock manager.

ls, show, graph, watch, recoveries and force-release ask a node's admin API
(HTTPS) with the credentials of the node's configuration file (--config) or
of --cacert/--cert/--key or --token-file; read-only credentials suffice for
all but force-release. The node is the one at --admin (comma-separated, in
order) or at the admin address of --config; when it does not answer, the
other members are asked.

acquire joins the lock manager itself, with a lease of its own, through
etcd (--endpoints and the TLS flags, or the etcd settings of --config).`}
	pf := root.PersistentFlags()
	o.admin.Flags(pf, true)
	pf.StringSliceVar(&o.endpoints, "endpoints", []string{"127.0.0.1:2379"}, "etcd endpoints (acquire only; default with --config: the node's)")
	pf.StringVar(&o.prefix, "prefix", cluster.DefaultConfig().Prefix(), "cluster key prefix in etcd (acquire only; default with --config: the node's)")
	pf.DurationVar(&o.election, "election-timeout", lease.DefaultElection, "the etcd cluster's raft election timeout (acquire only; taken from --config); sets the shortest lease TTL that rides out a leader change")
	pf.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	pf.DurationVar(&o.timeout, "timeout", 10*time.Second, "bound of each request to the admin API")

	ls := &cobra.Command{Use: "ls", Short: "List resources, holders, modes, tokens and waiters (waiting, converting and orphaned first)", Args: cobra.NoArgs,
		Long: `List the lock table's requests: resource, owner, state, mode, fencing
token, age and flags. Requests that wait, convert, are orphaned or block
someone come first. A cluster's store holds thousands of locks: without
--limit the table stops after ` + fmt.Sprint(defaultLimit) + ` rows and counts the rest per owner; narrow
with --node, --resource-prefix or --volume/--range, or give --limit 0 for
all. --json lists every match unless --limit is given.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runLs(cmd, o, out) }}
	ls.Flags().StringVar(&o.query.Node, "node", "", "only locks of this node")
	ls.Flags().StringVar(&o.query.ResourcePrefix, "resource-prefix", "", "only resources whose name starts with this")
	ls.Flags().StringVar(&o.query.Volume, "volume", "", "only regions of this volume")
	ls.Flags().StringVar(&o.rng, "range", "", "with --volume: only regions overlapping START-END")
	ls.Flags().IntVar(&o.limit, "limit", defaultLimit, "list at most this many requests (0: all)")

	show := &cobra.Command{Use: "show RESOURCE", Short: "Show one resource (NAME or VOLUME@START-END)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error { return runShow(cmd.Context(), o, out, a[0]) }}
	graph := &cobra.Command{Use: "graph", Short: "Show the wait-for graph, cycles flagged", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runGraph(cmd.Context(), o, out) }}
	watch := &cobra.Command{Use: "watch", Short: "Stream grants, conversions, callbacks, releases and recoveries", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runWatch(cmd.Context(), o, out, cmd.ErrOrStderr()) }}
	acq := &cobra.Command{Use: "acquire RESOURCE MODE", Short: "Hold a lock until Ctrl-C, --hold or a typed \"release\"; \"convert MODE\" converts it", Args: cobra.ExactArgs(2),
		Long: `Join the lock manager as a client member with a lease of its own and hold
a lock until Ctrl-C, --hold or a typed "release"; "convert MODE" converts it.
The lock is lockctl's: it ends with lockctl's lease, not with a node's, so
acquire talks to etcd directly (--endpoints and the TLS flags, or the etcd
settings of --config) instead of going through a node's admin API.`,
		RunE: func(cmd *cobra.Command, a []string) error { return runAcquire(cmd.Context(), o, out, in, a[0], a[1]) }}
	acq.Flags().DurationVar(&o.hold, "hold", 0, "release after this long (0: until Ctrl-C or \"release\")")
	acq.Flags().StringVar(&o.name, "name", "", "member name (default lockctl-HOST-PID)")
	acq.PreRunE = func(cmd *cobra.Command, _ []string) error { return o.applyConfig(cmd) }
	force := &cobra.Command{Use: "force-release REQUEST-ID", Short: "Remove a request whose owner is gone, leaving a record in etcd (admin role)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error { return runForce(cmd.Context(), o, out, in, a[0]) }}
	force.Flags().BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	recs := &cobra.Command{Use: "recoveries", Short: "List recoveries of dead nodes: node, step, since when, attempts, last error", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRecoveries(cmd.Context(), o, out, true) }}
	root.AddCommand(ls, show, graph, watch, acq, force, recs, clidoc.ManCommand())
	return root
}

// api is the admin API client of the command line's target.
func (o *options) api() (*adminclient.Client, error) {
	t := o.admin
	t.Timeout = o.timeout
	return t.Client()
}

// get asks the admin API for path and decodes the answer into out.
func (o *options) get(ctx context.Context, path string, out any) error {
	c, err := o.api()
	if err != nil {
		return err
	}
	return adminclient.Explain(c.Get(orBackground(ctx), path, out))
}

func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// lockQuery is the ls filter of the flags, refused before anything is
// sent when it is malformed.
func (o *options) lockQuery(cmd *cobra.Command) (node.LockQuery, error) {
	q := o.query
	if o.rng != "" {
		if q.Volume == "" {
			return q, errors.New("--range needs --volume")
		}
		var err error
		if q.Lo, q.Hi, err = node.ParseRange(o.rng); err != nil {
			return q, fmt.Errorf("bad --range: %w", err)
		}
		q.HasRange = true
	}
	if o.limit < 0 {
		return q, fmt.Errorf("bad --limit %d: want a count >= 0", o.limit)
	}
	q.Limit = o.limit
	if o.json && !cmd.Flags().Changed("limit") {
		q.Limit = 0
	}
	return q, nil
}

func runLs(cmd *cobra.Command, o *options, out io.Writer) error {
	q, err := o.lockQuery(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var v node.LocksView
	if err := o.get(ctx, "/api/locks?"+q.Values().Encode(), &v); err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(out).Encode(v.Locks)
	}
	if err := printLocks(out, v.Locks, v.Revision); err != nil {
		return err
	}
	if len(v.Locks) < v.Matched {
		fmt.Fprintf(out, "\n%d of %d matching requests shown (%d in the table). By owner and by kind:\n", len(v.Locks), v.Matched, v.Total)
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  OWNER\tHELD\tWAITING\tORPHANED")
		for _, c := range v.Owners {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", c.Owner, c.Held, c.Waiting, c.Orphan)
		}
		fmt.Fprintln(tw, "  KIND OF RESOURCE\tREQUESTS")
		for i, k := range v.Kinds {
			if i == 8 {
				fmt.Fprintf(tw, "  (%d more kinds)\t\n", len(v.Kinds)-i)
				break
			}
			fmt.Fprintf(tw, "  %s\t%d\n", k.Kind, k.Count)
		}
		tw.Flush()
		fmt.Fprintln(out, "Narrow with --node NODE, --resource-prefix PREFIX (a kind above) or --volume VOLUME [--range START-END]; --limit 0 lists all.")
	}
	// A dead node's locks stay orphaned until its recovery releases them:
	// say which recoveries are under way (lockctl recoveries has them all).
	return runRecoveries(ctx, o, out, false)
}

// runRecoveries lists the recovery records: all of them (with --json, or
// when all is set), or only those in progress after a lock listing.
func runRecoveries(ctx context.Context, o *options, out io.Writer, all bool) error {
	var recs []recovery.Record
	if err := o.get(ctx, "/api/recoveries", &recs); err != nil {
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

func printLocks(out io.Writer, locks []dlm.LockInfo, rev int64) error {
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
	var v node.ResourceView
	if err := o.get(ctx, "/api/locks/resource?name="+url.QueryEscape(res.String()), &v); err != nil {
		var se *adminclient.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return fmt.Errorf("%s (lockctl ls lists what is locked)", se.Message)
		}
		return err
	}
	if o.json {
		return json.NewEncoder(out).Encode(map[string]any{"resource": v.Resource, "locks": v.Locks, "lvb": v.LVB, "lvb_valid": v.LVBValid})
	}
	if len(v.Locks) == 0 {
		fmt.Fprintf(out, "%s: no holders or waiters\n", res)
	} else if err := printLocks(out, v.Locks, v.Revision); err != nil {
		return err
	}
	fmt.Fprintf(out, "value block: valid=%v %q\n", v.LVBValid, strings.TrimRight(string(v.LVB), "\x00"))
	return nil
}

func runGraph(ctx context.Context, o *options, out io.Writer) error {
	var v node.LocksView
	if err := o.get(ctx, "/api/locks?limit=1", &v); err != nil {
		return err
	}
	if o.json {
		edges := v.Waits
		if edges == nil {
			edges = []dlm.WaitEdge{}
		}
		return json.NewEncoder(out).Encode(map[string]any{"edges": edges, "cycles": v.Cycles, "victims": v.Victims})
	}
	if len(v.Waits) == 0 {
		fmt.Fprintln(out, "no waiters")
		return nil
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAITER\tWAITS FOR\tWHY\tRESOURCE")
	for _, e := range v.Waits {
		why := "holds incompatible"
		if e.Queued {
			why = "queued ahead"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.WaiterOwner, e.HolderOwner, why, e.Resource)
	}
	tw.Flush()
	for _, c := range v.Cycles {
		var s []string
		for _, x := range c {
			s = append(s, x.String())
		}
		fmt.Fprintf(out, "CYCLE (possible deadlock): %s\n", strings.Join(s, " -> "))
	}
	for _, id := range v.Victims {
		fmt.Fprintf(out, "VICTIM (fails with a deadlock error once the cycle outlasts the grace period): %s\n", id)
	}
	return nil
}

// runWatch follows the lock table's events through a node's admin API
// until Ctrl-C. When the node's stream ends (the node stopped), it goes
// on through another member; events between the two streams are not
// shown, and a line says so.
func runWatch(ctx context.Context, o *options, out, errOut io.Writer) error {
	ctx, stop := signal.NotifyContext(orBackground(ctx), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := o.api()
	if err != nil {
		return err
	}
	started := false
	for {
		begun := time.Now()
		resp, err := c.Stream(ctx, "/api/locks/watch")
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return adminclient.Explain(err)
		}
		base := c.Base()
		err = printEvents(ctx, resp.Body, out, o.json, base, started)
		resp.Body.Close()
		started = true
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(errOut, "lockctl: the stream from %s ended (%v); following through another node, events in between are not shown\n", base, err)
		// The next request tries the other members first; the node that
		// stopped comes last. A stream that ends at once is not retried
		// in a tight loop.
		c.Skip(base)
		if time.Since(begun) < time.Second {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
}

// printEvents prints the events of one watch stream until it ends.
func printEvents(ctx context.Context, body io.Reader, out io.Writer, asJSON bool, base string, again bool) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e node.LockEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("bad event: %w", err)
		}
		if asJSON {
			if _, err := fmt.Fprintf(out, "%s\n", sc.Bytes()); err != nil {
				return err
			}
			continue
		}
		switch e.Kind {
		case "start":
			fmt.Fprintf(out, "# watching the lock table through %s after revision %d (%d requests)\n", base, e.Revision, e.Requests)
		case "error":
			return errors.New(e.Detail)
		case "release":
			fmt.Fprintf(out, "%d release %s\n", e.Revision, e.ID)
		case "recovery-released":
			fmt.Fprintf(out, "%d recovery-released %s %s\n", e.Revision, e.ID, e.Detail)
		default:
			fmt.Fprintf(out, "%d %s\n", e.Revision, e.Text)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.EOF
}

// applyConfig fills the connection settings from a node's configuration
// file, unless the matching flags were given.
func (o *options) applyConfig(cmd *cobra.Command) error {
	if o.admin.Config == "" {
		return nil
	}
	cfg, err := cluster.LoadFile(o.admin.Config)
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
		o.admin.CACert, o.admin.Cert, o.admin.Key = cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile
		if o.admin.CACert == "" && cfg.TLS.AutoDir != "" {
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
			o.admin.CACert, o.admin.Cert, o.admin.Key = files.CA, files.Cert, files.Key
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
	if o.admin.CACert != "" || o.admin.Cert != "" || o.admin.Key != "" {
		info := transport.TLSInfo{TrustedCAFile: o.admin.CACert, CertFile: o.admin.Cert, KeyFile: o.admin.Key}
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
	// The blocking callback is printed once: another client waits for a
	// mode the hold stands in the way of (a conversion down or a release
	// lets it in).
	blocking := l.Blocking()
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
		case <-blocking:
			blocking = nil
			fmt.Fprintf(out, "blocking: another client waits for %s\n", res)
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
	c, err := o.api()
	if err != nil {
		return err
	}
	ctx = orBackground(ctx)
	var v node.LocksView
	if err := c.Get(ctx, "/api/locks?"+(node.LockQuery{ID: id}).Values().Encode(), &v); err != nil {
		return adminclient.Explain(err)
	}
	if len(v.Locks) == 0 {
		return fmt.Errorf("no request %q (see lockctl ls for IDs)", id)
	}
	l := v.Locks[0]
	if !o.yes {
		fmt.Fprintf(out, "force-release %s (%s %s of %s)? type yes: ", id, l.Resource, l.Granted, l.Owner)
		ans, _ := bufio.NewReader(in).ReadString('\n')
		if strings.TrimSpace(ans) != "yes" {
			return errors.New("not confirmed")
		}
	}
	host, _ := os.Hostname()
	var res node.ForceReleased
	if err := c.Post(ctx, "/api/locks/force-release", node.ForceReleaseRequest{ID: id, By: "lockctl@" + host}, &res); err != nil {
		var se *adminclient.StatusError
		if errors.As(err, &se) && (se.Code == http.StatusConflict || se.Code == http.StatusNotFound) {
			return errors.New(se.Message)
		}
		return adminclient.Explain(err)
	}
	fmt.Fprintf(out, "released %s; recorded under %s\n", id, res.Record)
	return nil
}
