package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storedlm"
	"github.com/shoal-ha/shoal/store/storenode"
)

// storeLook are the flags of the commands that look into a store: the
// volume's, and --online to read under the cluster's locks.
type storeLook struct {
	vf     volumeFlags
	online bool
}

func (l *storeLook) register(c *cobra.Command) {
	l.vf.readOnly = true
	l.vf.register(c, true)
	c.Flags().BoolVar(&l.online, "online", false, "with LEGs and --etcd: read under shared (PR) locks of the cluster's lock manager as a client member of its own, so nodes may keep running (for when no node's admin API answers; --config/--admin asks a node instead); without either no node may have the store open")
}

// open opens the volume read-only and the store on it for looking; with
// --online as a lock-manager client of the cluster at --etcd.
func (l *storeLook) open(ctx context.Context) func(args []string) (*store.Store, func(), error) {
	return func(args []string) (*store.Store, func(), error) {
		v, closeVol, err := l.vf.openVolume(ctx, args, mirror.NoSlot, false, nil)
		if err != nil {
			return nil, nil, err
		}
		log := l.vf.logger()
		var locks store.Locker
		leave := func() {}
		if l.online {
			locks, leave, err = l.joinLocks(ctx, log)
			if err != nil {
				closeVol()
				return nil, nil, err
			}
		}
		st, err := store.OpenReadOnly(ctx, v, locks, log)
		if err != nil {
			leave()
			closeVol()
			return nil, nil, err
		}
		return st, func() {
			st.Close()
			leave()
			closeVol()
		}, nil
	}
}

// joinLocks joins the cluster's lock manager as a client member; leave
// withdraws it.
func (l *storeLook) joinLocks(ctx context.Context, log hclog.Logger) (store.Locker, func(), error) {
	f := &l.vf
	if f.etcd == "" {
		return nil, nil, fmt.Errorf("--online needs --etcd (the cluster's etcd, whose lock manager the nodes use)")
	}
	ecfg := clientv3.Config{Endpoints: strings.Split(f.etcd, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if f.etcdCA != "" || f.etcdCert != "" || f.etcdKey != "" {
		tc, err := (transport.TLSInfo{TrustedCAFile: f.etcdCA, CertFile: f.etcdCert, KeyFile: f.etcdKey}).ClientConfig()
		if err != nil {
			return nil, nil, fmt.Errorf("etcd TLS files: %w", err)
		}
		ecfg.TLS = tc
	}
	cli, err := clientv3.New(ecfg)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd: %w", err)
	}
	host, _ := os.Hostname()
	name := fmt.Sprintf("shoalblk-%s-%d", strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, host), os.Getpid())
	m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: cli, Prefix: f.etcdPrefix, Name: name, TTL: 10 * time.Second, Margin: 2 * time.Second, Logger: log})
	if err != nil {
		cli.Close()
		return nil, nil, fmt.Errorf("join the lock manager: %w", err)
	}
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix, cfg.Logger = cli, m, f.etcdPrefix, log
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		m.Leave(context.Background())
		cli.Close()
		return nil, nil, fmt.Errorf("start the lock manager client: %w", err)
	}
	return storedlm.New(n), func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Close(cctx)
		m.Leave(cctx)
		cli.Close()
	}, nil
}

// fileLine is one line of ls and stat: mode, size, inode/generation,
// mtime, name.
func fileLine(e storenode.Entry) string {
	ino := ""
	if e.Ino != 0 {
		ino = fmt.Sprintf("%d/%d", e.Ino, e.Gen)
	}
	return fmt.Sprintf("%-11s %10d %-12s %s %s", e.Mode, e.Size, ino, e.ModTime.UTC().Format(time.RFC3339), e.Name)
}

// pathArgs accepts PATH LEG... or, aimed at a running node, PATH alone.
func pathArgs(on *onlineFlags) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case on.given() && len(args) != 1:
			return fmt.Errorf("with --config/--admin give the PATH only (the node reads its open store)")
		case !on.given() && len(args) < 2:
			return fmt.Errorf("give PATH and the volume's LEGs, or PATH with --config/--admin to ask a running node")
		}
		return nil
	}
}

// askStore GETs a store route of a running node for path.
func askStore(cmd *cobra.Command, on *onlineFlags, route, path string, out any) error {
	c, err := on.client()
	if err != nil {
		return err
	}
	return apiError(c.Get(cmd.Context(), route+"?path="+url.QueryEscape(path), out))
}

func storeLsCommand() *cobra.Command {
	var l storeLook
	var on onlineFlags
	c := &cobra.Command{
		Use:   "ls PATH (--config FILE | --admin ADDR | LEG...)",
		Short: "List a directory of the store: mode, size, inode/generation, mtime, name",
		Args:  pathArgs(&on),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			var out []storenode.Entry
			if on.given() {
				if err := askStore(cmd, &on, "/api/store/ls", storenode.FSPath(args[0]), &out); err != nil {
					return err
				}
			} else {
				st, done, err := l.open(ctx)(args[1:])
				if err != nil {
					return err
				}
				defer done()
				ents, err := st.ReadDir(storenode.FSPath(args[0]))
				if err != nil {
					return err
				}
				for _, e := range ents {
					fi, err := e.Info()
					if err != nil {
						return fmt.Errorf("%s: %w", e.Name(), err)
					}
					out = append(out, storenode.EntryOf(fi))
				}
			}
			if l.vf.jsonOut {
				return printJSON(stdout, out)
			}
			for _, e := range out {
				fmt.Fprintln(stdout, fileLine(e))
			}
			return nil
		},
	}
	l.register(c)
	on.register(c)
	return c
}

func storeStatCommand() *cobra.Command {
	var l storeLook
	var on onlineFlags
	c := &cobra.Command{
		Use:   "stat PATH (--config FILE | --admin ADDR | LEG...)",
		Short: "Show a file's or directory's inode: mode, size, inode/generation, mtime",
		Args:  pathArgs(&on),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			var e storenode.Entry
			if on.given() {
				if err := askStore(cmd, &on, "/api/store/stat", storenode.FSPath(args[0]), &e); err != nil {
					return err
				}
			} else {
				st, done, err := l.open(ctx)(args[1:])
				if err != nil {
					return err
				}
				defer done()
				fi, err := st.Stat(storenode.FSPath(args[0]))
				if err != nil {
					return err
				}
				e = storenode.EntryOf(fi)
			}
			if l.vf.jsonOut {
				return printJSON(stdout, e)
			}
			fmt.Fprintln(stdout, fileLine(e))
			return nil
		},
	}
	l.register(c)
	on.register(c)
	return c
}

func storeCatCommand() *cobra.Command {
	var l storeLook
	var on onlineFlags
	c := &cobra.Command{
		Use:   "cat PATH (--config FILE | --admin ADDR | LEG...)",
		Short: "Write a file of the store to standard output",
		Args:  pathArgs(&on),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			ctx := cmd.Context()
			if on.given() {
				c, err := on.client()
				if err != nil {
					return err
				}
				resp, err := c.Stream(ctx, "/api/store/cat?path="+url.QueryEscape(storenode.FSPath(args[0])))
				if err != nil {
					return apiError(err)
				}
				defer resp.Body.Close()
				_, err = io.Copy(stdout, resp.Body)
				return err
			}
			st, done, err := l.open(ctx)(args[1:])
			if err != nil {
				return err
			}
			defer done()
			b, err := st.ReadFile(storenode.FSPath(args[0]))
			if err != nil {
				return err
			}
			_, err = stdout.Write(b)
			return err
		},
	}
	l.register(c)
	on.register(c)
	return c
}

func storeJournalCommand() *cobra.Command {
	var l storeLook
	c := &cobra.Command{
		Use:   "journal SLOT LEG...",
		Short: "Dump one slot's journal: header, committed transactions, pending records",
		Long: `Print the journal of node slot SLOT as a replay would see it: the header
(tail, applied and sealed sequence numbers, the owner), each committed
transaction from the tail (sequence, position, the metadata blocks it
writes in place, its records and acknowledgements, whether it is already
in place), and the records a recovery would hand over now. Read-only.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			slot, err := strconv.Atoi(args[0])
			if err != nil || slot < 0 {
				return fmt.Errorf("SLOT %q is not a slot number", args[0])
			}
			ctx := cmd.Context()
			v, closeVol, err := l.vf.openVolume(ctx, args[1:], mirror.NoSlot, false, nil)
			if err != nil {
				return err
			}
			defer closeVol()
			info, txs, err := store.ReadJournal(ctx, v, slot)
			if err != nil {
				return err
			}
			if l.vf.jsonOut {
				return printJSON(stdout, struct {
					Header       store.JournalInfo `json:"header"`
					Transactions []store.JournalTx `json:"transactions"`
				}{info, txs})
			}
			fmt.Fprintf(stdout, "slot %d owner %q: tail at block %d seq %d, applied through %d, sealed %d, records handled %d, next record %d\n",
				info.Slot, info.Owner, info.TailPos, info.TailSeq, info.AppliedSeq, info.SealSeq, info.Handled, info.NextRecord)
			for _, tx := range txs {
				state := "to replay"
				if tx.Applied {
					state = "in place"
				}
				fmt.Fprintf(stdout, "tx %d at %d (%s): blocks %v", tx.Seq, tx.Pos, state, tx.Blocks)
				for _, r := range tx.Records {
					fmt.Fprintf(stdout, " record %s#%d (%d bytes)", r.Kind, r.ID, len(r.Payload))
				}
				if len(tx.Acks) > 0 {
					fmt.Fprintf(stdout, " acks %v", tx.Acks)
				}
				fmt.Fprintln(stdout)
			}
			for _, r := range info.Pending {
				fmt.Fprintf(stdout, "pending record %s#%d (%d bytes)\n", r.Kind, r.ID, len(r.Payload))
			}
			fmt.Fprintf(stdout, "%d committed transactions, %d pending records\n", len(txs), len(info.Pending))
			return nil
		},
	}
	l.vf.readOnly = true
	l.vf.register(c, true)
	return c
}
