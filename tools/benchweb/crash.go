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
	"time"

	"github.com/shoal-ha/shoal/web/webtest"
)

// demoCluster is the three-node cluster of fixtures/demo.sh, in a private
// directory: real shoald processes with the web tier on 127.0.0.N:8080,
// lease-only fencing over file legs.
type demoCluster struct {
	top, dir, bin string
}

func (d *demoCluster) script(args ...string) error {
	cmd := exec.Command(filepath.Join(d.top, "fixtures/demo.sh"), args...)
	cmd.Env = append(os.Environ(), "SHOAL_DEMO_DIR="+d.dir, "SHOAL_BIN="+d.bin)
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
				return fmt.Errorf("node%d could not load the demo site (see its log)", n)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no node loaded the demo site within %v", within)
}

// onCluster starts the demo's three-node cluster in a private directory
// and runs the sessions rows on it (sessions) and the crash runs (crash);
// rows report their own failures. The error is the cluster's (it did not
// start or serve). The cluster's logs are kept when anything failed.
func onCluster(w io.Writer, top string, sessions, crash bool) (err error) {
	bin := filepath.Join(top, "bin")
	if _, err := os.Stat(filepath.Join(bin, "shoald")); err != nil {
		return fmt.Errorf("the cluster rows need bin/shoald (make build): %w", err)
	}
	dir, err := os.MkdirTemp("", "benchweb-demo")
	if err != nil {
		return err
	}
	before := failures
	defer func() {
		if err != nil || failures > before {
			fmt.Fprintf(os.Stderr, "benchweb: the cluster's logs are kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	d := &demoCluster{top: top, dir: dir, bin: bin}
	if err := d.script("start", "--detach"); err != nil {
		return err
	}
	defer d.script("stop")
	for n := 1; n <= 3; n++ {
		if err := d.waitWeb(n, 60*time.Second); err != nil {
			return err
		}
	}
	// The first start loads the demo site into the store in the
	// background; measured during it, the rows would measure the load.
	if err := d.waitSeeded(180 * time.Second); err != nil {
		return err
	}
	if sessions {
		fmt.Fprintf(w, "\nsessions API on three shoald processes (the demo's cluster: embedded etcd, the lock manager, a mirror over two file legs, the store): %d clients, %v per run\n", *apiClients, *apiDur)
		sessionHeader(w)
		sessionRows(w, []string{d.url(1), d.url(2), d.url(3)})
	}
	if crash {
		if err := crashRuns(w, d, *crashes); err != nil {
			rowFailed(w, "crash to answer", err)
		}
	}
	return nil
}

// crashRuns kills, runs times, the node that holds requests in flight and
// measures from the SIGKILL to the answer of each in-flight request retried
// with its key on a survivor; it also checks that every acknowledged add
// counted exactly once.
func crashRuns(w io.Writer, d *demoCluster, runs int) error {
	client := &http.Client{Timeout: 10 * time.Second}
	all := func() []string { return []string{d.url(1), d.url(2), d.url(3)} }
	wc := &webtest.Client{HTTP: client, Nodes: all, Backoff: 20 * time.Millisecond}
	ctx := context.Background()
	res, err := wc.Do(ctx, "POST", "/api/v1/sessions", nil, webtest.NewKey())
	if err != nil || res.Status != 201 {
		return fmt.Errorf("create session: %v %d %s", err, res.Status, res.Body)
	}
	var sess struct{ ID string }
	json.Unmarshal(res.Body, &sess)
	path := "/api/v1/sessions/" + sess.ID + "/vars/n"
	body := []byte(`{"op":"add","value":1}`)
	var acked int64
	var answers []time.Duration
	requests := 0
	for run := 0; run < runs; run++ {
		victim := run%3 + 1
		var survivors []string
		for n := 1; n <= 3; n++ {
			if n != victim {
				survivors = append(survivors, d.url(n))
			}
		}
		// Clients keep requests in flight on the victim until it dies.
		var mu sync.Mutex
		var inflight []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				one := &http.Client{Timeout: 10 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					key := webtest.NewKey()
					req, _ := http.NewRequest("POST", d.url(victim)+path, bytes.NewReader(body))
					req.Header.Set("Idempotency-Key", strconv.Quote(key))
					resp, err := one.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					mu.Lock()
					requests++
					switch {
					case err == nil && resp.StatusCode == 200:
						acked++
					case err == nil && resp.StatusCode != 503 && resp.StatusCode != 409:
						mu.Unlock()
						panic(fmt.Sprintf("victim answered %d", resp.StatusCode))
					default:
						// No answer (the node died) or "try again": the
						// client retries this key on a survivor.
						inflight = append(inflight, key)
						mu.Unlock()
						return
					}
					mu.Unlock()
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		pid, err := d.pid(victim)
		if err != nil {
			return err
		}
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return err
		}
		close(stop)
		wg.Wait()
		sc := &webtest.Client{HTTP: client, Nodes: func() []string { return survivors }, Backoff: 20 * time.Millisecond}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		var worst time.Duration
		for _, key := range inflight {
			r, err := sc.Do(rctx, "POST", path, body, key)
			if err != nil || r.Status != 200 {
				cancel()
				return fmt.Errorf("run %d: retry of an in-flight request: %v %d %s", run, err, r.Status, r.Body)
			}
			acked++
			worst = max(worst, time.Since(killed))
		}
		cancel()
		if len(inflight) > 0 {
			answers = append(answers, worst)
		}
		if err := d.script("restart", fmt.Sprintf("node%d", victim)); err != nil {
			return err
		}
		if err := d.waitWeb(victim, 60*time.Second); err != nil {
			return err
		}
	}
	res, err = wc.Do(ctx, "GET", "/api/v1/sessions/"+sess.ID, nil, "")
	if err != nil {
		return err
	}
	var view struct{ Vars map[string]int64 }
	json.Unmarshal(res.Body, &view)
	fmt.Fprintf(w, "\ncrash to answer (lease-only fencing, file legs, real shoald processes): SIGKILL of the node with 8 requests in flight to the last of them answered on a survivor, retried with its key\n")
	if len(answers) == 0 {
		return errors.New("no run had a request in flight")
	}
	slices.Sort(answers)
	fmt.Fprintf(w, "runs %d  median %v  p99 %v  max %v\n", len(answers), answers[len(answers)/2].Round(time.Millisecond),
		answers[min(len(answers)-1, len(answers)*99/100)].Round(time.Millisecond), answers[len(answers)-1].Round(time.Millisecond))
	fmt.Fprintf(w, "exactly once: %d requests, %d acknowledged adds, stored count %d\n", requests, acked, view.Vars["n"])
	if view.Vars["n"] != acked {
		return fmt.Errorf("stored count %d differs from %d acknowledged adds", view.Vars["n"], acked)
	}
	fmt.Fprintf(w, "reservation fencing: not measured here (needs iSCSI legs on tgtd with persistent reservations)\n")
	return nil
}
