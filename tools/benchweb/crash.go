package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/web/webtest"
)

// demoCluster is the three-node cluster of fixtures/demo.sh, in a private
// directory: real shoald processes with the web tier on 127.0.0.N:8080,
// lease-only fencing over the demo's file legs, or, with legs set (LUNs
// of a tgtd), persistent-reservation fencing and direct failure detection.
type demoCluster struct {
	top, dir, bin string
	legs          []string
}

func (d *demoCluster) script(args ...string) error {
	cmd := exec.Command(filepath.Join(d.top, "fixtures/demo.sh"), args...)
	cmd.Env = append(os.Environ(), "SHOAL_DEMO_DIR="+d.dir, "SHOAL_BIN="+d.bin, "SHOAL_DEMO_LEGS="+strings.Join(d.legs, ","))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("demo.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (d *demoCluster) url(n int) string { return fmt.Sprintf("http://127.0.0.%d:8080", n) }

func (d *demoCluster) pid(n int) (int, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, fmt.Sprintf("node%d.pid", n)))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitWeb waits until node n's sessions API answers.
func (d *demoCluster) waitWeb(n int, within time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp, err := c.Get(d.url(n) + "/api/v1/sessions/00000000000000000000000000000000")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("node%d's web tier did not answer within %v", n, within)
}

// errSiteLoad: the node loading the demo site into the store gave up (for
// one, when it was fenced on a wrong suspicion part way: a loaded machine
// that stalls every process longer than the failure detector's timeout).
// The site is not loaded again; a fresh cluster may load it.
var errSiteLoad = errors.New("the demo site could not be loaded")

// waitSeeded waits until a node logged that it loaded the demo site into
// the store (or that there was nothing to load).
func (d *demoCluster) waitSeeded(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for n := 1; n <= 3; n++ {
			b, _ := os.ReadFile(filepath.Join(d.dir, fmt.Sprintf("node%d.log", n)))
			if bytes.Contains(b, []byte("site loaded")) {
				return nil
			}
			if bytes.Contains(b, []byte("loading the site failed")) {
				return fmt.Errorf("%w: node%d (see its log)", errSiteLoad, n)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no node loaded the demo site within %v", within)
}

// Retry policies of the crash runs' clients (-crash-retry).
const (
	retryInTurn = "in-turn"
	retryRandom = "random"
)

// Fencing modes of the crash runs (-crash-fencing).
const (
	fenceReservations = "reservations"
	fenceLease        = "lease"
)

// crashTitles name each fencing mode's row.
var crashTitles = map[string]string{
	fenceReservations: "reservation fencing + direct detection (tgtd iSCSI legs)",
	fenceLease:        "lease-only fencing (file legs)",
}

// crashFencing parses -crash-fencing.
func crashFencing(list string) ([]string, error) {
	var modes []string
	for _, m := range strings.Split(list, ",") {
		m = strings.TrimSpace(m)
		if _, ok := crashTitles[m]; !ok {
			return nil, fmt.Errorf("-crash-fencing: unknown mode %q (want %s, %s)", m, fenceReservations, fenceLease)
		}
		if !slices.Contains(modes, m) {
			modes = append(modes, m)
		}
	}
	return modes, nil
}

// clusterRows runs the rows on three shoald processes: the sessions rows
// (sessions) on the demo's cluster over file legs, and the crash runs of
// each fencing mode in modes, lease-only on that same cluster and
// reservation fencing on a second one over LUNs of a tgtd started here;
// then it prints the crash row of every mode side by side.
func clusterRows(w io.Writer, top string, sessions bool, modes []string) {
	results := map[string]*crashResult{}
	if sessions || slices.Contains(modes, fenceLease) {
		res, err := onceMore(func() (*crashResult, error) {
			return onCluster(w, top, nil, sessions, slices.Contains(modes, fenceLease))
		})
		if err != nil {
			rowFailed(w, "three-node shoald cluster on file legs", err)
		}
		results[fenceLease] = res
	}
	if slices.Contains(modes, fenceReservations) {
		res, err := onceMore(func() (*crashResult, error) { return onTgtdCluster(w, top) })
		if err != nil {
			rowFailed(w, "three-node shoald cluster on tgtd legs", err)
		}
		results[fenceReservations] = res
	}
	if len(modes) > 0 {
		printCrash(w, modes, results)
	}
}

// onceMore runs start a second time, on a fresh cluster, when the first
// one could not load the demo site (errSiteLoad), and says so.
func onceMore(start func() (*crashResult, error)) (*crashResult, error) {
	res, err := start()
	if errors.Is(err, errSiteLoad) {
		fmt.Fprintf(os.Stderr, "benchweb: %v; starting a fresh cluster once more\n", err)
		res, err = start()
	}
	return res, err
}

// onTgtdCluster starts a tgtd with two 256 MiB LUNs (the demo's leg
// size), runs the crash runs on the demo's cluster over them (persistent
// reservations: the nodes fence by PREEMPT and detect a dead peer by its
// missed UDP heartbeats), and stops the cluster, then the tgtd.
func onTgtdCluster(w io.Writer, top string) (*crashResult, error) {
	if err := tgtrig.Available(); err != nil {
		return nil, fmt.Errorf("reservation fencing needs tgtd (fixtures/setup.sh installs it): %w", err)
	}
	dir, err := os.MkdirTemp("", "benchweb-tgtd")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rig, err := tgtrig.Start(tgtrig.Config{Dir: dir})
	if err != nil {
		return nil, err
	}
	defer rig.Close()
	var legs []string
	for i := range 2 {
		tgt, err := rig.AddTarget(fmt.Sprintf("iqn.2026-11.io.shoal.benchweb:leg%d", i))
		if err != nil {
			return nil, err
		}
		if _, err := tgt.AddLUN(1, 256<<20); err != nil {
			return nil, err
		}
		legs = append(legs, tgt.URL(1))
	}
	return onCluster(w, top, legs, false, true)
}

// onCluster starts the demo's three-node cluster in a private directory
// (over legs, or the demo's file legs when legs is empty) and runs the
// sessions rows on it (sessions) and the crash runs (crash); rows report
// their own failures. The error is the cluster's (it did not start or
// serve). The cluster's logs are kept when anything failed, or with
// -keep-logs.
func onCluster(w io.Writer, top string, legs []string, sessions, crash bool) (res *crashResult, err error) {
	bin := filepath.Join(top, "bin")
	if _, err := os.Stat(filepath.Join(bin, "shoald")); err != nil {
		return nil, fmt.Errorf("the cluster rows need bin/shoald (make build): %w", err)
	}
	dir, err := os.MkdirTemp("", "benchweb-demo")
	if err != nil {
		return nil, err
	}
	before := failures
	defer func() {
		if err != nil || failures > before || *keepLogs {
			fmt.Fprintf(os.Stderr, "benchweb: the cluster's logs are kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	d := &demoCluster{top: top, dir: dir, bin: bin, legs: legs}
	if err := d.script("start", "--detach"); err != nil {
		return nil, err
	}
	defer d.script("stop")
	for n := 1; n <= 3; n++ {
		if err := d.waitWeb(n, 60*time.Second); err != nil {
			return nil, err
		}
	}
	// The first start loads the demo site into the store in the
	// background; measured during it, the rows would measure the load.
	if err := d.waitSeeded(180 * time.Second); err != nil {
		return nil, err
	}
	if sessions {
		fmt.Fprintf(w, "\nsessions API on three shoald processes (the demo's cluster: embedded etcd, the lock manager, a mirror over two file legs, the store): %d clients, %v per run\n", *apiClients, *apiDur)
		sessionHeader(w)
		sessionRows(w, []string{d.url(1), d.url(2), d.url(3)}, nil)
	}
	if !crash {
		return nil, nil
	}
	mode := fenceLease
	if len(legs) > 0 {
		mode = fenceReservations
	}
	res, cerr := crashRuns(d, mode, *crashes)
	if cerr != nil {
		rowFailed(w, "crash to answer, "+crashTitles[mode], cerr)
		return nil, nil
	}
	return res, nil
}

// Crash runs: each of crashClients clients sends adds to the victim, one
// after another, until the victim dies; the one it has in flight then
// goes to the survivors with its key at once, tried every crashBackoff
// until a survivor answers it: in turn (-crash-retry in-turn, as the demo
// page's client does: the next node in order, asked again while it
// answers 503) or on a survivor drawn at random each try (random).
const (
	crashClients = 8
	crashBackoff = 20 * time.Millisecond
	// crashAnswerBound bounds one run's wait for its retried requests.
	crashAnswerBound = 60 * time.Second
)

// crashResult is one fencing mode's crash runs.
type crashResult struct {
	mode string
	// answers are, per run with requests in flight, the time from the
	// SIGKILL to the last of them answered on a survivor.
	answers []time.Duration
	// stories are the runs' recoveries as the survivors' logs tell them.
	stories  []story
	requests int
	inflight int
	acked    int64
	stored   int64
}

// crashRuns kills, runs times, the node that holds requests in flight and
// measures from the SIGKILL to the answer of each in-flight request retried
// with its key on a survivor; it also checks that every acknowledged add
// counted exactly once.
func crashRuns(d *demoCluster, mode string, runs int) (*crashResult, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	all := func() []string { return []string{d.url(1), d.url(2), d.url(3)} }
	wc := &webtest.Client{HTTP: client, Nodes: all, Backoff: crashBackoff}
	ctx := context.Background()
	res, err := wc.Do(ctx, "POST", "/api/v1/sessions", nil, webtest.NewKey())
	if err != nil || res.Status != 201 {
		return nil, fmt.Errorf("create session: %v %d %s", err, res.Status, res.Body)
	}
	var sess struct{ ID string }
	if err := json.Unmarshal(res.Body, &sess); err != nil || sess.ID == "" {
		return nil, fmt.Errorf("create session: answer %q: %v", res.Body, err)
	}
	path := "/api/v1/sessions/" + sess.ID + "/vars/n"
	body := []byte(`{"op":"add","value":1}`)
	out := &crashResult{mode: mode}
	for run := 0; run < runs; run++ {
		victim := run%3 + 1
		// The survivors from the node after the victim on: in turn, every
		// client fails over to the first of them (and stays there).
		var survivors []string
		for i := 1; i < 3; i++ {
			survivors = append(survivors, d.url((victim-1+i)%3+1))
		}
		sc := &webtest.Client{HTTP: client, Nodes: func() []string { return survivors }, Backoff: crashBackoff, InTurn: *crashRetry == retryInTurn}
		rctx, cancel := context.WithTimeout(ctx, crashAnswerBound)
		var (
			mu       sync.Mutex
			last     time.Time
			first    time.Time
			tries    int
			inflight int
			errs     []error
			killed   time.Time
			dead     = make(chan struct{})
			wg       sync.WaitGroup
		)
		for range crashClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				one := &http.Client{Timeout: 10 * time.Second}
				for {
					select {
					case <-dead:
						return
					default:
					}
					key := webtest.NewKey()
					status, err := postKey(one, d.url(victim)+path, body, key)
					mu.Lock()
					out.requests++
					switch {
					case err == nil && status == http.StatusOK:
						out.acked++
						mu.Unlock()
						continue
					case err == nil && status != http.StatusServiceUnavailable && status != http.StatusConflict:
						errs = append(errs, fmt.Errorf("the victim answered %d", status))
						mu.Unlock()
						return
					}
					mu.Unlock()
					// No answer (the node died) or "try again": the
					// client sends this key to the survivors at once.
					<-dead
					r, err := sc.Do(rctx, "POST", path, body, key)
					at := time.Now()
					mu.Lock()
					defer mu.Unlock()
					inflight++
					if err != nil || r.Status != http.StatusOK {
						errs = append(errs, fmt.Errorf("retry of an in-flight request: %v %d %s", err, r.Status, r.Body))
						return
					}
					out.acked++
					if at.After(last) {
						last = at
					}
					if first.IsZero() || at.Before(first) {
						first = at
					}
					tries = max(tries, r.Tries)
					return
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		pid, err := d.pid(victim)
		if err != nil {
			close(dead)
			cancel()
			wg.Wait()
			return nil, err
		}
		killed = time.Now()
		kerr := syscall.Kill(pid, syscall.SIGKILL)
		close(dead)
		wg.Wait()
		cancel()
		if kerr != nil {
			return nil, kerr
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("run %d (killed node%d at %s): %w", run, victim, killed.UTC().Format("15:04:05.000"), errors.Join(errs...))
		}
		out.inflight += inflight
		var took, earliest time.Duration
		if inflight > 0 {
			took, earliest = last.Sub(killed), first.Sub(killed)
			out.answers = append(out.answers, took)
		}
		if err := d.script("restart", fmt.Sprintf("node%d", victim)); err != nil {
			return nil, err
		}
		if err := d.waitWeb(victim, 60*time.Second); err != nil {
			return nil, err
		}
		st := readStory(d, victim, killed)
		if inflight > 0 {
			st.answer = took
			out.stories = append(out.stories, st)
		}
		fmt.Fprintf(os.Stderr, "benchweb: crash run %d (%s): killed node%d at %s with %d in flight; answers after %v to %v (at most %d tries each); %s\n",
			run, mode, victim, killed.UTC().Format("15:04:05.000"), inflight, ms3(earliest), ms3(took), tries, st)
	}
	res, err = wc.Do(ctx, "GET", "/api/v1/sessions/"+sess.ID, nil, "")
	if err != nil {
		return nil, err
	}
	var view struct{ Vars map[string]int64 }
	if err := json.Unmarshal(res.Body, &view); err != nil {
		return nil, fmt.Errorf("session %s: answer %q: %v", sess.ID, res.Body, err)
	}
	out.stored = view.Vars["n"]
	if len(out.answers) == 0 {
		return nil, errors.New("no run had a request in flight")
	}
	if out.stored != out.acked {
		return nil, fmt.Errorf("stored count %d differs from %d acknowledged adds", out.stored, out.acked)
	}
	return out, nil
}

// postKey sends one add with its Idempotency-Key and returns the status.
func postKey(c *http.Client, url string, body []byte, key string) (int, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Idempotency-Key", strconv.Quote(key))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// quantile is the q-quantile (nearest rank) of sorted s.
func quantile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// printCrash prints the crash row of every mode, the ratio of the
// reservation-fencing median to the lease-only one, and where the time
// went as the survivors' logs tell it.
func printCrash(w io.Writer, modes []string, results map[string]*crashResult) {
	how := "in turn (every client on the node after the victim, asked again while it answers 503, as the demo page does)"
	if *crashRetry == retryRandom {
		how = "on a survivor drawn at random each try"
	}
	fmt.Fprintf(w, "\ncrash to answer: SIGKILL of the node with %d requests in flight (adds on one session) to the last of them answered on a survivor, each client retrying its Idempotency-Key at once and every %v %s; the demo's three shoald processes (web tier on the store on a two-leg mirror); %d runs per fencing mode, victims in turn; shared 2-core machine: noisy\n",
		crashClients, crashBackoff, how, *crashes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FENCING\tRUNS\tMEDIAN\tP99\tMAX\tIN FLIGHT\tEXACTLY ONCE (acknowledged adds / stored count)")
	for _, m := range modes {
		r := results[m]
		if r == nil {
			fmt.Fprintf(tw, "%s\t0\t-\t-\t-\t-\tnot measured (see FAILED above)\n", crashTitles[m])
			continue
		}
		s := slices.Clone(r.answers)
		slices.Sort(s)
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t%d\t%d / %d\n", crashTitles[m], len(s), ms3(quantile(s, 0.5)), ms3(quantile(s, 0.99)),
			ms3(s[len(s)-1]), r.inflight, r.acked, r.stored)
	}
	tw.Flush()
	pr, lease := results[fenceReservations], results[fenceLease]
	if pr != nil {
		med := quantile(sorted(pr.answers), 0.5)
		met := "met"
		if med > time.Second {
			met = "NOT met"
		}
		fmt.Fprintf(w, "target: reservation-fencing median at most 1s: %s (%v)", met, ms3(med))
		if lease != nil {
			fmt.Fprintf(w, "; reservation / lease-only median: %.2fx", float64(med)/float64(quantile(sorted(lease.answers), 0.5)))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "where the time goes (medians over the runs, from the survivors' failover story lines; times from the SIGKILL; DETECTED: a survivor's failure detector, or the lease's expiry, saw the victim dead; RECOVERY ASKED: the recovery request reached etcd; ANSWER - DONE: per run, the last answer after the recovery's end):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FENCING\tDETECTED\tRECOVERY ASKED\tFENCE\tRECORD\tRESYNC\tREPLAY\tRELEASE\tRECOVERY DONE\tLAST ANSWER\tANSWER - DONE\tSUSPECTED BY")
	for _, m := range modes {
		if r := results[m]; r != nil {
			breakdown(tw, crashTitles[m], r.stories)
		}
	}
	tw.Flush()
}

func sorted(s []time.Duration) []time.Duration {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// ms3 rounds a duration to the millisecond for the table.
func ms3(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
