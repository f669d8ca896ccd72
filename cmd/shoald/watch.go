package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/fencing/recovery"
)

// clusterWatch turns successive views of the cluster (a node's member view
// and the recovery records) into events: node up, node down or left, each
// recovery step as it finishes. It is the deterministic core of shoald
// watch: fed views, it returns the lines to print.
type clusterWatch struct {
	started  bool
	via      string
	members  map[string]keysMember // name -> last seen record
	progress map[string]int        // recovery ID -> history entries told
	done     map[string]bool
	lastErr  map[string]string
}

type keysMember struct {
	incarnation string
	leaving     bool
}

func newClusterWatch() *clusterWatch {
	return &clusterWatch{members: map[string]keysMember{}, progress: map[string]int{}, done: map[string]bool{}, lastErr: map[string]string{}}
}

// observe compares the view from node via with the last one and returns
// what changed, one line each.
func (w *clusterWatch) observe(via string, view cluster.MembersView, recs []recovery.Record) []string {
	var out []string
	cur := map[string]keysMember{}
	for _, m := range view.Members {
		cur[m.Name] = keysMember{incarnation: m.Incarnation, leaving: m.Leaving}
	}
	if !w.started {
		w.started, w.via = true, via
		var names []string
		for n := range cur {
			names = append(names, n)
		}
		sort.Strings(names)
		out = append(out, fmt.Sprintf("watching the cluster through %s: members %s", via, strings.Join(names, ", ")))
		w.members = cur
		for _, r := range recs {
			id := r.Victim.String()
			w.progress[id] = len(r.History)
			w.done[id] = r.Finished == recovery.StepDone
		}
		return out
	}
	if via != w.via {
		out = append(out, fmt.Sprintf("following the cluster through %s now", via))
		w.via = via
	}
	// The node's own member events tell a clean stop from a death even
	// when the leaving record came and went between two views.
	left := map[keysMember]bool{}
	for _, e := range view.Events {
		if e.Kind == cluster.NodeLeft {
			left[keysMember{incarnation: e.Member.Name + "/" + e.Member.Incarnation}] = true
		}
	}
	gone := func(name string, old keysMember) string {
		if old.leaving || left[keysMember{incarnation: name + "/" + old.incarnation}] {
			return fmt.Sprintf("%s left (clean stop of incarnation %s)", name, old.incarnation)
		}
		return fmt.Sprintf("%s down (incarnation %s: its lease ended)", name, old.incarnation)
	}
	for _, name := range sortedKeys(w.members) {
		old := w.members[name]
		now, ok := cur[name]
		switch {
		case !ok:
			out = append(out, gone(name, old))
		case now.incarnation != old.incarnation:
			out = append(out, gone(name, old), fmt.Sprintf("%s up (incarnation %s)", name, now.incarnation))
		}
	}
	for _, name := range sortedKeys(cur) {
		if _, ok := w.members[name]; !ok {
			out = append(out, fmt.Sprintf("%s up (incarnation %s)", name, cur[name].incarnation))
		}
	}
	w.members = cur
	sort.Slice(recs, func(i, j int) bool { return recs[i].Requested.Before(recs[j].Requested) })
	for _, r := range recs {
		id := r.Victim.String()
		told, known := w.progress[id]
		if !known {
			by := r.RequestedBy
			if by == "" {
				by = "a survivor"
			}
			out = append(out, fmt.Sprintf("recovery of %s: requested by %s, coordinator %s", id, by, dashed(r.Coordinator)))
		}
		for ; told < len(r.History); told++ {
			h := r.History[told]
			if h.Step == recovery.StepDone {
				continue
			}
			line := fmt.Sprintf("recovery of %s: %s done in %v", id, h.Step, h.Took.Round(time.Millisecond))
			if o := h.Outcome; !o.IsZero() {
				var what []string
				if o.Method != "" {
					what = append(what, o.Method)
				}
				if o.Unit != "" {
					what = append(what, fmt.Sprintf("%d %s", o.Count, o.Unit))
				}
				line += " (" + strings.Join(what, ", ") + ")"
			}
			out = append(out, line)
		}
		w.progress[id] = told
		if r.Finished == recovery.StepDone && !w.done[id] {
			if d := r.Updated.Sub(r.Requested); !r.Requested.IsZero() && d >= 0 {
				out = append(out, fmt.Sprintf("recovery of %s: done in %v", id, d.Round(time.Millisecond)))
			} else {
				out = append(out, fmt.Sprintf("recovery of %s: done", id))
			}
			w.done[id] = true
		} else if r.Finished != recovery.StepDone && r.LastError != "" && r.LastError != w.lastErr[id] {
			out = append(out, fmt.Sprintf("recovery of %s: %s failing (attempt %d): %s", id, r.Finished+1, r.Attempts, r.LastError))
		}
		w.lastErr[id] = r.LastError
	}
	return out
}

func sortedKeys(m map[string]keysMember) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func dashed(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newWatchCmd() *cobra.Command {
	var admins string
	var interval time.Duration
	var creds adminTarget
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Print node up/down and every recovery step as they happen",
		Long: `Follow the cluster through the admin API of the first node that answers
(--admin, comma-separated; the next one when it stops answering) and print
one line per event: a node up, down or left, a recovery requested, each of
its steps as it finishes (with what it did), and its end. Nothing is printed
while nothing changes. Runs until Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var bases []string
			for _, a := range strings.Split(admins, ",") {
				if a = strings.TrimSpace(a); a != "" {
					t := creds
					t.admin = a
					u, err := t.url()
					if err != nil {
						return err
					}
					bases = append(bases, u)
				}
			}
			if len(bases) == 0 {
				return fmt.Errorf("--admin: no address given")
			}
			return watchCluster(ctx, cmd.OutOrStdout(), bases, interval)
		},
	}
	cmd.Flags().StringVar(&admins, "admin", "127.0.0.1:7080", "admin addresses of the nodes to follow, comma-separated, in order of preference")
	cmd.Flags().DurationVar(&interval, "interval", 200*time.Millisecond, "how often the member view is read")
	creds.addressFlags(cmd)
	cmd.Flags().StringVarP(&creds.config, "config", "c", "", "node configuration file to take the TLS files from")
	return cmd
}

// watchCluster reads the cluster's views until ctx ends and prints what
// changes, each line with the time of day.
func watchCluster(ctx context.Context, w io.Writer, bases []string, interval time.Duration) error {
	cw := newClusterWatch()
	cur := 0
	silent := false
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var lines []string
		ok := false
		for k := 0; k < len(bases) && !ok; k++ {
			b := bases[(cur+k)%len(bases)]
			view, recs, err := readViews(b)
			if err != nil || !view.Ready {
				continue
			}
			cur, ok = (cur+k)%len(bases), true
			lines = cw.observe(view.Node, view, recs)
		}
		now := time.Now().Format("15:04:05")
		switch {
		case !ok && !silent:
			fmt.Fprintf(w, "%s no node answers (%s); waiting\n", now, strings.Join(bases, ", "))
			silent = true
		case ok:
			silent = false
		}
		for _, l := range lines {
			fmt.Fprintf(w, "%s %s\n", now, l)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func readViews(base string) (cluster.MembersView, []recovery.Record, error) {
	var view cluster.MembersView
	raw, err := fetchRaw(base + "/api/members")
	if err != nil {
		return view, nil, err
	}
	if err := json.Unmarshal(raw, &view); err != nil {
		return view, nil, err
	}
	recs, err := fetchRecoveries(base)
	return view, recs, err
}
