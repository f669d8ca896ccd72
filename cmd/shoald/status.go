package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/adminclient"
	"github.com/spf13/cobra"
)

// adminTarget finds the admin URL of the node to ask and the credentials
// to show it (adminclient.Target: --admin wins, then the admin address of
// --config; --cacert/--cert/--key, else the TLS files of --config, else
// the admin token).
type adminTarget struct {
	admin  string
	config string
	t      adminclient.Target
}

func (a *adminTarget) flags(cmd *cobra.Command) {
	a.addressFlags(cmd)
	cmd.Flags().StringVarP(&a.config, "config", "c", "", "node configuration file to take the admin address and the TLS files from")
}

// addressFlags are the credential flags without --admin's and --config's
// defaults (for commands that declare those themselves).
func (a *adminTarget) addressFlags(cmd *cobra.Command) {
	if cmd.Flags().Lookup("admin") == nil {
		cmd.Flags().StringVar(&a.admin, "admin", "", "admin address of the node to ask (default "+adminclient.DefaultAdmin+")")
	}
	a.t.Flags(cmd.Flags(), false)
}

// url is the base URL of the node to ask; it sets httpClient up with the
// credentials.
func (a *adminTarget) url() (string, error) {
	t := a.t
	t.Config = a.config
	if a.admin != "" {
		t.Admin = []string{a.admin}
	}
	c, err := t.Client()
	if err != nil {
		return "", err
	}
	httpClient = c.HTTP()
	httpClient.Timeout = 10 * time.Second
	return c.Base(), nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func newStatusCmd() *cobra.Command {
	var t adminTarget
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster as a node sees it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			base, err := t.url()
			if err != nil {
				return err
			}
			resp, err := httpClient.Get(base + "/api/status")
			if err != nil {
				return fmt.Errorf("cannot reach the node at %s: %w", base, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
			}
			if asJSON {
				recs, err := fetchRaw(base + "/api/recoveries")
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "shoald: recoveries unavailable: %v\n", err)
					recs = []byte("null")
				}
				out, err := statusJSON(body, recs)
				if err != nil {
					return fmt.Errorf("%s: bad status document: %w", base, err)
				}
				_, err = w.Write(out)
				return err
			}
			recs, rerr := fetchRecoveries(base)
			var st cluster.Status
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("%s: bad status document: %w", base, err)
			}
			printStatus(w, st)
			fmt.Fprintln(w)
			switch {
			case rerr != nil:
				fmt.Fprintln(w, "recoveries: unavailable:", rerr)
			case len(recovery.InProgress(recs)) == 0:
				fmt.Fprintf(w, "recoveries: none in progress (%d finished)\n", len(recs))
			default:
				if st.Coordinator == "" {
					fmt.Fprintf(w, "NO COORDINATOR ELECTED: %d recoveries wait for one\n", len(recovery.InProgress(recs)))
				}
				fmt.Fprintln(w, "RECOVERIES IN PROGRESS")
				if err := recovery.WriteTable(w, recovery.InProgress(recs), time.Now()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	t.flags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// statusJSON is the node's status document as the admin API wrote it,
// with the recovery records added as a last field "recoveries", indented.
// Nothing is decoded into Go values on the way: field order and every
// digit of 64-bit lease IDs and revisions stay exactly as the API sent
// them (a float64 would round IDs past 2^53).
func statusJSON(status, recoveries []byte) ([]byte, error) {
	status, recoveries = bytes.TrimSpace(status), bytes.TrimSpace(recoveries)
	if !json.Valid(status) || len(status) < 2 || status[0] != '{' {
		return nil, fmt.Errorf("not a JSON object")
	}
	if !json.Valid(recoveries) {
		return nil, fmt.Errorf("recoveries are not JSON")
	}
	var doc bytes.Buffer
	body := bytes.TrimSpace(status[1 : len(status)-1])
	doc.WriteByte('{')
	doc.Write(body)
	if len(body) > 0 {
		doc.WriteByte(',')
	}
	doc.WriteString(`"recoveries":`)
	doc.Write(recoveries)
	doc.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, doc.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// fetchRaw GETs url and returns the body of a 200 answer.
func fetchRaw(url string) ([]byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// fetchRecoveries asks the node for every recovery record.
func fetchRecoveries(base string) ([]recovery.Record, error) {
	resp, err := httpClient.Get(base + "/api/recoveries")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var recs []recovery.Record
	return recs, json.NewDecoder(resp.Body).Decode(&recs)
}

func printStatus(w io.Writer, st cluster.Status) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY"
	}
	fmt.Fprintf(w, "cluster %s, seen from %s (incarnation %s): %s, lease trusted for %.1fs, lease losses %d\n",
		st.Cluster, st.Node, dash(st.Incarnation), ready, st.TrustLeft, st.LeaseLosses)
	fmt.Fprintf(w, "coordinator: %s   etcd (%s) leader: %s\n\n", dash(st.Coordinator), st.EtcdMode, dash(st.EtcdLeader))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tKIND\tINCARNATION\tTTL LEFT\tCLIENT\tADMIN\tUP FOR\tROLE")
	for _, m := range st.Members {
		var roles []string
		if m.Name == st.Coordinator {
			roles = append(roles, "coordinator")
		}
		if m.Name == st.EtcdLeader {
			roles = append(roles, "etcd-leader")
		}
		ttl := "?"
		if m.TTLLeft >= 0 {
			ttl = fmt.Sprintf("%.0fs", m.TTLLeft)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Kind, m.Incarnation, ttl, dash(m.ClientURL), dash(m.AdminURL), cluster.Age(m.Started), dash(strings.Join(roles, ",")))
	}
	tw.Flush()
	if len(st.EtcdMembers) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ETCD MEMBER\tID\tPEER\tCLIENT\tLEADER")
		for _, m := range st.EtcdMembers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", dash(m.Name), m.ID, strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ","), m.Leader)
		}
		tw.Flush()
	}
	for _, e := range st.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newLeaveCmd() *cobra.Command {
	var t adminTarget
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Make a running node leave the cluster for good (removes its etcd member and its files)",
		Long: `Ask a running node to leave the cluster for good and follow it until it has
left: it resigns, stops its parts, revokes its lease, removes its etcd member,
deletes the member's etcd data, certs/, shoal-node.json and .lock (the data
directory too when nothing else is in it; a CA directory stays) and exits.
Each step is printed as it happens; the command returns once another member
no longer lists the node (exit 0), or fails after --timeout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := t.url()
			if err != nil {
				return err
			}
			return leave(cmd.OutOrStdout(), base, timeout)
		},
	}
	t.flags(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "give up following the node after this long")
	return cmd
}

// leave asks the node at base to leave and reports its steps until another
// member no longer lists it.
func leave(w io.Writer, base string, timeout time.Duration) error {
	raw, err := fetchRaw(base + "/api/members")
	if err != nil {
		return fmt.Errorf("cannot reach the node at %s: %w", base, err)
	}
	var view cluster.MembersView
	if err := json.Unmarshal(raw, &view); err != nil {
		return fmt.Errorf("%s: bad member view: %w", base, err)
	}
	var others []string
	for _, m := range view.Members {
		if m.Name != view.Node && m.AdminURL != "" {
			others = append(others, m.AdminURL)
		}
	}
	resp, err := httpClient.Post(base+"/api/leave", "application/json", nil)
	if err != nil {
		return fmt.Errorf("cannot reach the node at %s: %w", base, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(w, "%s: leaving\n", view.Node)
	deadline := time.Now().Add(timeout)
	shown := 0
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has not left after %v; see its log", view.Node, timeout)
		}
		raw, err := fetchRaw(base + "/api/leave")
		if err != nil {
			// The admin listener closes as the node exits.
			break
		}
		var p cluster.LeaveProgress
		if json.Unmarshal(raw, &p) == nil {
			for ; shown < len(p.Steps); shown++ {
				fmt.Fprintf(w, "%s: %s\n", view.Node, p.Steps[shown].Step)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(w, "%s: exited\n", view.Node)
	if len(others) == 0 {
		return nil
	}
	for {
		for _, o := range others {
			raw, err := fetchRaw(o + "/api/status")
			if err != nil {
				continue
			}
			var st cluster.Status
			if json.Unmarshal(raw, &st) != nil || !st.Ready {
				continue
			}
			listed := false
			for _, m := range st.Members {
				listed = listed || m.Name == view.Node
			}
			for _, m := range st.EtcdMembers {
				listed = listed || m.Name == view.Node
			}
			if !listed {
				fmt.Fprintf(w, "%s has left the cluster: %s lists it neither as a member nor as an etcd member\n", view.Node, st.Node)
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s exited but the other members still list it after %v", view.Node, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
