// Command benchweb measures Shoal's web tier side by side with nginx from
// Debian's packages, in one run, and prints the ratios:
//
//	content   wrk (HTTP/1.1) and h2load (HTTP/2, cleartext with prior
//	          knowledge on both, or over TLS with -tls) GET of 1 KiB, 16 KiB
//	          and 1 MiB files, from a Shoal node serving them out of the
//	          store (on an image file) and from nginx serving a copy on the
//	          same disk, same connections; beside them the floor (a bare
//	          net/http server with the node's settings answering the same
//	          bytes and headers from memory) and the content handler on the
//	          local copy. Targets: 0.7x nginx's requests/s for the small
//	          files, 0.9x its throughput for 1 MiB.
//	sessions  mutations/s and p50/p99 of POST .../vars/{name} (add, a fresh
//	          Idempotency-Key each) on one node, and on three nodes of the
//	          same store with clients spread over them, on one session and on
//	          one session per client.
//
//	crash     SIGKILL of the node holding requests in flight to the answer
//	          of the last of them, each retried with its key on the
//	          survivors at once, over the demo's three-node shoald cluster
//	          (fixtures/demo.sh in a private directory), median, p99 and max
//	          over -crash-runs runs per fencing mode: persistent-reservation
//	          fencing with direct failure detection (the cluster on two
//	          LUNs of a tgtd started here; target: median at most 1 s) and
//	          lease-only fencing (the demo's file legs), with their ratio,
//	          every acknowledged add counted once, and where the time went
//	          (detection, each recovery step, the answer after the
//	          recovery) from the survivors' failover story lines.
//
// A row that cannot be measured is printed FAILED with the reason and the
// exit status is 1.
//
// Usage: benchweb [-dur 5s] [-conns 32] [-streams 10] [-tls] [-tool wrk|h2load] [-api-dur 3s]
// [-api-clients 16] [-crash-runs 20] [-crash-fencing reservations,lease]
// [-crash-retry in-turn|random] [-keep-logs] [-only content|sessions|cluster|crash] [-out file]
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/httpmetrics"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/session"
	"github.com/shoal-ha/shoal/web/webtest"
)

var (
	dur         = flag.Duration("dur", 5*time.Second, "duration of each content run")
	conns       = flag.Int("conns", 32, "connections of each content run (wrk -c, h2load -c)")
	streams     = flag.Int("streams", 10, "concurrent streams per HTTP/2 connection (h2load -m)")
	apiDur      = flag.Duration("api-dur", 3*time.Second, "duration of each sessions run")
	apiClients  = flag.Int("api-clients", 16, "concurrent clients of each sessions run")
	out         = flag.String("out", "", "also write the table to this file")
	crashes     = flag.Int("crash-runs", 20, "crash-to-answer runs per fencing mode on a three-node shoald cluster (0: none)")
	crashModes  = flag.String("crash-fencing", "reservations,lease", "fencing modes of the crash runs: reservations (tgtd LUNs, persistent reservations, direct failure detection), lease (file legs, lease-only)")
	crashRetry  = flag.String("crash-retry", "in-turn", "how the crash runs' clients retry on the survivors: in-turn (the next node in order, asked again while it answers 503) or random (a survivor drawn at random each try)")
	keepLogs    = flag.Bool("keep-logs", false, "keep the shoald clusters' directories (node logs with the failover story lines) and say where")
	only        = flag.String("only", "", "run only this part: content, sessions (in-process nodes), cluster (sessions on three shoald processes) or crash")
	onlyTool    = flag.String("tool", "", "content runs with only this load tool: wrk or h2load")
	overTLS     = flag.Bool("tls", false, "content runs over TLS on every server (one ECDSA P-256 certificate made for the run; nginx with its default ciphers and session tickets, Shoal with Go's): wrk speaks HTTP/1.1, h2load HTTP/2 by ALPN; needs -only content")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the Shoal node's serving (content and sessions runs) to this file")
	writeBehind = flag.Int("write-behind", web.DefaultConfig().WriteBehind, "the Shoal servers' queue of bytes per connection written behind the serving goroutine (web.Config.WriteBehind; 0: none)")
	sndbuf      = flag.Int("loopback-sndbuf", web.DefaultConfig().LoopbackSendBuffer, "the Shoal servers' socket send buffer for loopback clients in bytes (web.Config.LoopbackSendBuffer; 0: the kernel's sizing)")
	memProfile  = flag.String("memprofile", "", "write an allocation profile (after the content and sessions runs) to this file")
)

var sizes = []struct {
	name string
	size int
}{{"1k.bin", 1 << 10}, {"16k.bin", 16 << 10}, {"1m.bin", 1 << 20}}

func main() {
	flag.Parse()
	if *dur < time.Second || *apiDur < 500*time.Millisecond || *conns < 1 || *apiClients < 1 {
		fail(fmt.Errorf("-dur must be at least 1s, -api-dur 500ms, -conns and -api-clients at least 1"))
	}
	if *overTLS && *only != "content" {
		fail(fmt.Errorf("-tls needs -only content"))
	}
	for _, tool := range []string{"wrk", "h2load"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail(fmt.Errorf("%s is missing: run fixtures/setup.sh", tool))
		}
	}
	var report bytes.Buffer
	w := io.MultiWriter(os.Stdout, &report)
	if *only == "" || *only == "content" || *only == "sessions" {
		stop, err := startProfiles()
		if err != nil {
			fail(err)
		}
		err = run(w)
		stop()
		if err != nil {
			fail(err)
		}
	}
	wantCluster := *only == "" || *only == "cluster"
	var modes []string
	if *crashes > 0 && (*only == "" || *only == "crash") {
		var err error
		if modes, err = crashFencing(*crashModes); err != nil {
			fail(err)
		}
		if *crashRetry != retryInTurn && *crashRetry != retryRandom {
			fail(fmt.Errorf("-crash-retry %q: want %s or %s", *crashRetry, retryInTurn, retryRandom))
		}
	}
	if wantCluster || len(modes) > 0 {
		top, err := os.Getwd()
		if err != nil {
			fail(err)
		}
		clusterRows(w, top, wantCluster, modes)
	}
	if *out != "" {
		if err := os.WriteFile(*out, report.Bytes(), 0o644); err != nil {
			fail(err)
		}
	}
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "benchweb: %d rows could not be measured\n", failures)
		os.Exit(1)
	}
}

// startProfiles starts the profiles asked for; the returned func stops
// them and writes the files.
func startProfiles() (func(), error) {
	var cpu *os.File
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		cpu = f
	}
	if *memProfile != "" {
		runtime.MemProfileRate = 4096
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			cpu.Close()
		}
		if *memProfile != "" {
			f, err := os.Create(*memProfile)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchweb: memprofile:", err)
			}
		}
	}, nil
}

// failures counts the rows that could not be measured; the exit status is
// non-zero when there are any.
var failures int

func rowFailed(w io.Writer, row string, err error) {
	failures++
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	fmt.Fprintf(w, "%s FAILED: %s\n", row, msg)
	fmt.Fprintf(os.Stderr, "benchweb: %s: %v\n", row, err)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchweb:", err)
	os.Exit(1)
}

// node is one Shoal web node of the bench, on one slot of the store.
type node struct {
	st  *store.Store
	srv *web.Server
	url string
}

type member struct{ self session.Owner }

func (m member) Self() session.Owner                    { return m.self }
func (m member) State(session.Owner) session.OwnerState { return session.OwnerLive }

func run(w io.Writer) error {
	tmp, err := os.MkdirTemp("", "benchweb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	for _, d := range []string{root, filepath.Join(tmp, "ng1"), filepath.Join(tmp, "ng2")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	files := map[string][]byte{}
	for _, s := range sizes {
		b := make([]byte, s.size)
		rand.Read(b)
		files[s.name] = b
		if err := os.WriteFile(filepath.Join(root, s.name), b, 0o644); err != nil {
			return err
		}
	}
	os.WriteFile(filepath.Join(root, "index.html"), []byte("<p>bench</p>"), 0o644)

	// The store on an image file of the same disk.
	dev, err := blockdev.OpenFile(filepath.Join(tmp, "store.img"), blockdev.OpenOptions{Create: true, CreateSize: 256 << 20})
	if err != nil {
		return err
	}
	defer dev.Close()
	ctx := context.Background()
	if _, err := store.Format(ctx, dev, store.FormatOptions{Slots: 4}); err != nil {
		return err
	}
	locks := store.NewMemLocks()
	cfg := web.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.LoopbackSendBuffer = *sndbuf
	cfg.WriteBehind = *writeBehind
	scheme, client := "http://", http.DefaultClient
	if *overTLS {
		certFile, keyFile, pool, err := webtest.SelfSigned(tmp)
		if err != nil {
			return err
		}
		cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
		scheme, client = "https://", &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	} else {
		cfg.H2C = true
	}
	// The request metrics a node wraps its web tier in (cmd/shoald).
	cfg.Middleware = httpmetrics.New().Wrap
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "shoal", Level: hclog.Warn, Output: os.Stderr})
	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.srv.Close()
			n.st.Close()
		}
	}()
	openNode := func(slot int) error {
		scfg := store.DefaultConfig(dev, slot, locks.Node(fmt.Sprintf("n%d", slot)))
		scfg.Handlers = map[string]store.Handler{session.RecordIntent: web.RecoveryHandler(cfg)}
		st, err := store.Open(ctx, scfg)
		if err != nil {
			return err
		}
		srv, err := web.NewServer(cfg, web.FromStore(st), member{session.Owner{Node: fmt.Sprintf("n%d", slot), Incarnation: "1"}})
		if err != nil {
			st.Close()
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go srv.Serve(ln)
		nodes = append(nodes, &node{st: st, srv: srv, url: scheme + ln.Addr().String()})
		return nil
	}
	if err := openNode(0); err != nil {
		return err
	}
	if err := nodes[0].st.MkdirAll("site", 0o755); err != nil {
		return err
	}
	for name, b := range files {
		if err := nodes[0].st.WriteFile("site/"+name, b, 0o644); err != nil {
			return err
		}
	}
	// Debian's nginx speaks HTTP/2 without TLS only on a listener of its
	// own: one for wrk, one for h2load. Over TLS one listener speaks both.
	var ng1, ng2 *webtest.Nginx
	if *overTLS {
		ng1, err = webtest.StartNginxTLS(root, filepath.Join(tmp, "ng1"), runtime.NumCPU(), cfg.TLSCertFile, cfg.TLSKeyFile)
		ng2 = ng1
	} else {
		ng1, err = webtest.StartNginx(root, filepath.Join(tmp, "ng1"), runtime.NumCPU(), false)
		if err == nil {
			defer ng1.Stop()
			ng2, err = webtest.StartNginx(root, filepath.Join(tmp, "ng2"), runtime.NumCPU(), true)
		}
	}
	if err != nil {
		return err
	}
	defer ng2.Stop()
	nginxURL := map[string]string{"wrk": ng1.URL, "h2load": ng2.URL}
	// The web tier's content handler over the same local copy nginx
	// serves: the HTTP layer alone, without the store.
	dirURL, stopDir, err := serveDir(cfg, root)
	if err != nil {
		return err
	}
	defer stopDir()

	// The floor: a bare net/http server with the node's settings answering
	// the same bytes with the same headers from memory, to tell the cost
	// of net/http itself from that of Shoal's path.
	floorURL, stopFloor, err := serveFloor(cfg, client, nodes[0].url)
	if err != nil {
		return err
	}
	defer stopFloor()

	fmt.Fprintf(w, "benchweb: %d CPUs, content runs of %v with %d connections (h2load: %d streams each), Shoal node reading from the store on an image file, nginx from a copy on the same disk\n",
		runtime.NumCPU(), *dur, *conns, *streams)
	if *overTLS {
		for _, p := range []struct{ name, url string }{{"shoal", nodes[0].url}, {"nginx", ng2.URL}} {
			fmt.Fprintf(w, "TLS of %s (h2load): %s\n", p.name, tlsInfo(p.url+"/1k.bin"))
		}
	}
	fmt.Fprintf(w, "CPU placement: nginx %d workers, Shoal GOMAXPROCS %d, the load tool %d thread(s), all on the same %d CPUs (none pinned); cpu us/req is the server's own processor time (user+system) per request, which other load on the machine does not change much, req x is the throughput ratio, which it does\n\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), loadThreads(), runtime.NumCPU())
	fmt.Fprintf(w, "%-8s %-7s %-6s %12s %12s %11s %11s %10s %10s %7s %7s %7s %8s %8s\n", "tool", "file", "from", "shoal req/s", "nginx req/s", "shoal MB/s", "nginx MB/s",
		"shoal cpu", "nginx cpu", "req x", "MB/s x", "cpu x", "req /fl", "cpu /fl")
	selfCPU := func() (time.Duration, error) {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0, err
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
	}
	nginxCPU := map[string]func() (time.Duration, error){"wrk": ng1.CPUTime, "h2load": ng2.CPUTime}
	for _, tool := range []string{"wrk", "h2load"} {
		if *only == "sessions" {
			break
		}
		if *onlyTool != "" && tool != *onlyTool {
			continue
		}
		for _, s := range sizes {
			ngx, nerr := runLoad(tool, nginxURL[tool]+"/"+s.name, nginxCPU[tool])
			// The floor is measured first: the Shoal rows are compared with
			// it as well as with nginx.
			var floor load
			var ferr error
			for _, from := range []struct{ name, url string }{{"floor", floorURL}, {"store", nodes[0].url}, {"disk", dirURL}} {
				row := fmt.Sprintf("%-8s %-7s %-6s", tool, s.name, from.name)
				if nerr != nil {
					rowFailed(w, row, nerr)
					continue
				}
				got, err := runLoad(tool, from.url+"/"+s.name, selfCPU)
				if from.name == "floor" {
					floor, ferr = got, err
				}
				if err != nil {
					rowFailed(w, row, err)
					continue
				}
				toFloor := fmt.Sprintf(" %8s %8s", "-", "-")
				if from.name != "floor" && ferr == nil {
					toFloor = fmt.Sprintf(" %8.2f %8.2f", got.rps/floor.rps, floor.cpuPerReq/got.cpuPerReq)
				}
				fmt.Fprintf(w, "%s %12.0f %12.0f %11.1f %11.1f %7.1f us %7.1f us %7.2f %7.2f %7.2f%s\n", row,
					got.rps, ngx.rps, got.mbps, ngx.mbps, got.cpuPerReq, ngx.cpuPerReq, got.rps/ngx.rps, got.mbps/ngx.mbps, ngx.cpuPerReq/got.cpuPerReq, toFloor)
			}
		}
	}
	fmt.Fprintf(w, "targets: req x >= 0.70 for 1k and 16k, MB/s x >= 0.90 for 1m (from store; from disk is the content handler on the local copy, without the store); cpu x = nginx's cpu per request / Shoal's\n")
	fmt.Fprintf(w, "floor: a bare net/http server with the node's server settings answering the same bytes and headers from memory; req /fl and cpu /fl compare a row with it (1.00: Shoal's own path costs nothing beyond net/http)\n\n")
	if *only == "content" {
		return nil
	}

	for slot := 1; slot < 3; slot++ {
		if err := openNode(slot); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "sessions API, in-process nodes (one store on an image file, the store's in-memory lock manager): POST .../vars/n {\"op\":\"add\"} with a fresh Idempotency-Key each, %d clients, %v per run\n", *apiClients, *apiDur)
	sessionHeader(w)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url)
	}
	sessionRows(w, urls, func() store.Stats {
		var sum store.Stats
		for _, n := range nodes {
			st := n.st.Stats()
			sum.Commits += st.Commits
			sum.Checkpoints += st.Checkpoints
			sum.LockRequests += st.LockRequests
			sum.LockReleases += st.LockReleases
		}
		return sum
	})
	return nil
}

// sessionRows measures the sessions API on the first node of urls and on
// all of them, with one session for all clients and one per client; a row
// of three nodes gives its rate against the one-node row of the same
// sessions (x 1 node).
//
// cost, when not nil, sums what the nodes' stores did so far: each row
// then says what a mutation cost them (store.Stats), from the sessions'
// first adds to the end of the run.
func sessionRows(w io.Writer, urls []string, cost func() store.Stats) {
	oneNode := map[bool]float64{}
	var notes []string
	for _, c := range []struct {
		name     string
		nodes    int
		sessions bool
	}{{"1 node, 1 session", 1, false}, {"1 node, session per client", 1, true},
		{"3 nodes, 1 session", 3, false}, {"3 nodes, session per client", 3, true}} {
		var before store.Stats
		if cost != nil {
			before = cost()
		}
		r, err := apiLoad(urls[:c.nodes], c.sessions)
		if err == nil && cost != nil && r.n > 0 {
			d, per := cost(), float64(r.n)
			notes = append(notes, fmt.Sprintf("%s: per mutation %.2f commits, %.2f checkpoints, %.2f lock requests, %.2f lock releases",
				c.name, float64(d.Commits-before.Commits)/per, float64(d.Checkpoints-before.Checkpoints)/per,
				float64(d.LockRequests-before.LockRequests)/per, float64(d.LockReleases-before.LockReleases)/per))
		}
		if err != nil {
			rowFailed(w, fmt.Sprintf("%-28s", c.name), err)
			continue
		}
		ratio := ""
		if c.nodes == 1 {
			oneNode[c.sessions] = r.rate
		} else if one := oneNode[c.sessions]; one > 0 {
			ratio = fmt.Sprintf("%.2f", r.rate/one)
		}
		fmt.Fprintf(w, "%-28s %12.0f %10v %10v %8d %9s\n", c.name, r.rate, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.errors, ratio)
	}
	fmt.Fprintf(w, "(3 nodes, 1 session: every add rewrites the one session file, whose lock (and its checkpoint) goes to the serving node each time; session per client: each node rewrites its own sessions, and only the key shard a new key lands in moves, 2 times in 3)\n")
	for _, n := range notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
}

type load struct {
	rps, mbps float64
	cpuPerReq float64 // the server's processor time per request, in microseconds
}

var (
	wrkRPS   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkBytes = regexp.MustCompile(`Transfer/sec:\s+([0-9.]+)([KMG]?B)`)
	h2Done   = regexp.MustCompile(`finished in [0-9.]+m?s, ([0-9.]+) req/s, ([0-9.]+)([KMG]?B)/s`)
	h2Fail   = regexp.MustCompile(`requests: .* ([0-9]+) failed, ([0-9]+) errored`)
)

func unit(n float64, u string) float64 {
	switch u {
	case "KB":
		return n / 1024
	case "MB":
		return n
	case "GB":
		return n * 1024
	}
	return n / (1 << 20)
}

// loadThreads is the number of threads of wrk and h2load: half the CPUs,
// the other half left to the server.
func loadThreads() int { return max(1, runtime.NumCPU()/2) }

// runLoad runs tool against url for -dur and measures the server's
// processor time with cpu (before and after).
func runLoad(tool, url string, cpu func() (time.Duration, error)) (load, error) {
	cpu0, err := cpu()
	if err != nil {
		return load{}, fmt.Errorf("server cpu time: %w", err)
	}
	l, err := runTool(tool, url)
	if err != nil {
		return load{}, err
	}
	cpu1, err := cpu()
	if err != nil {
		return load{}, fmt.Errorf("server cpu time: %w", err)
	}
	if n := l.rps * dur.Seconds(); n > 0 {
		l.cpuPerReq = float64((cpu1 - cpu0).Microseconds()) / n
	}
	return l, nil
}

func runTool(tool, url string) (load, error) {
	secs := strconv.Itoa(int(dur.Seconds()))
	var cmd *exec.Cmd
	threads := strconv.Itoa(loadThreads())
	if tool == "wrk" {
		cmd = exec.Command("wrk", "-t", threads, "-c", strconv.Itoa(*conns), "-d", secs+"s", url)
	} else {
		cmd = exec.Command("h2load", "-t", threads, "-c", strconv.Itoa(*conns), "-m", strconv.Itoa(*streams), "-D", secs, url)
	}
	outb, err := cmd.CombinedOutput()
	text := string(outb)
	if err != nil {
		return load{}, fmt.Errorf("%s %s: %v\n%s", tool, url, err, text)
	}
	if tool == "wrk" {
		l, err := parseWrk(text)
		if err != nil {
			return load{}, fmt.Errorf("wrk %s: %v:\n%s%s", url, err, text, probe(url))
		}
		return l, nil
	}
	l, err := parseH2load(text)
	if err != nil {
		return load{}, fmt.Errorf("h2load %s: %v:\n%s", url, err, text)
	}
	return l, nil
}

// parseWrk reads requests/s and MB/s from wrk's report; a run with non-2xx
// answers or socket errors other than the final close is refused.
func parseWrk(text string) (load, error) {
	m1, m2 := wrkRPS.FindStringSubmatch(text), wrkBytes.FindStringSubmatch(text)
	if m1 == nil || m2 == nil {
		return load{}, errors.New("no Requests/sec and Transfer/sec lines")
	}
	if strings.Contains(text, "Non-2xx") {
		return load{}, errors.New("answers other than 2xx or 3xx")
	}
	rps, _ := strconv.ParseFloat(m1[1], 64)
	b, _ := strconv.ParseFloat(m2[1], 64)
	return load{rps: rps, mbps: unit(b, m2[2])}, nil
}

// parseH2load reads requests/s and MB/s from h2load's report; a run with
// failed or errored requests is refused.
func parseH2load(text string) (load, error) {
	m := h2Done.FindStringSubmatch(text)
	if m == nil {
		return load{}, errors.New("no \"finished in\" line")
	}
	if f := h2Fail.FindStringSubmatch(text); f == nil || f[1] != "0" || f[2] != "0" {
		return load{}, errors.New("failed or errored requests")
	}
	rps, _ := strconv.ParseFloat(m[1], 64)
	b, _ := strconv.ParseFloat(m[2], 64)
	return load{rps: rps, mbps: unit(b, m[3])}, nil
}

type apiResult struct {
	rate     float64
	p50, p99 time.Duration
	errors   int64
	n        int // mutations answered in the timed window
}

func sessionHeader(w io.Writer) {
	fmt.Fprintf(w, "(sessions made and each client's first add answered before the clock starts: the run's locks are on its nodes)\n")
	fmt.Fprintf(w, "%-28s %12s %10s %10s %8s %9s\n", "case", "mutations/s", "p50", "p99", "errors", "x 1 node")
}

// sessionWithin bounds the making of one session of a sessions run.
const sessionWithin = 60 * time.Second

// apiLoad runs -api-clients clients for -api-dur, spread over the nodes at
// urls, each adding 1 with a fresh key at a time, to one shared session or
// to one session each (made before, as is one unmeasured add per client).
func apiLoad(urls []string, perClient bool) (apiResult, error) {
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *apiClients}}
	// A session is made as a client must: a 503 or 409 (the node could
	// not journal the request in time, or its first try still runs) is
	// asked again with the same key, within sessionWithin.
	newSession := func(base string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), sessionWithin)
		defer cancel()
		c := &webtest.Client{HTTP: client, Nodes: func() []string { return []string{base} }, InTurn: true}
		r, err := c.Do(ctx, "POST", "/api/v1/sessions", nil, webtest.NewKey())
		if err != nil {
			return "", fmt.Errorf("create session: %w", err)
		}
		var v struct{ ID string }
		if err := json.Unmarshal(r.Body, &v); err != nil || r.Status != http.StatusCreated {
			return "", fmt.Errorf("create session: %d %v", r.Status, err)
		}
		return v.ID, nil
	}
	shared, err := newSession(urls[0])
	if err != nil {
		return apiResult{}, err
	}
	// The sessions are made before the clock starts.
	sessions := make([]string, *apiClients)
	for c := range sessions {
		sessions[c] = shared
		if perClient {
			if sessions[c], err = newSession(urls[c%len(urls)]); err != nil {
				return apiResult{}, err
			}
		}
	}
	var mu sync.Mutex
	var lats []time.Duration
	var errs atomic.Int64
	// Each client's first add is not measured: it moves the session's and
	// the keys' locks (and the mirror regions the node writes) to the
	// nodes of this run from wherever the site load or the run before
	// left them. The clock starts when every client has had its answer.
	var warm, wg sync.WaitGroup
	var start, stop time.Time
	begin := make(chan struct{})
	for c := range *apiClients {
		base, sess := urls[c%len(urls)], sessions[c]
		add := func() (time.Duration, bool) {
			req, _ := http.NewRequest("POST", base+"/api/v1/sessions/"+sess+"/vars/n", bytes.NewReader([]byte(`{"op":"add","value":1}`)))
			req.Header.Set("Idempotency-Key", strconv.Quote(webtest.NewKey()))
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				return 0, false
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return time.Since(t0), resp.StatusCode == http.StatusOK
		}
		warm.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			add()
			warm.Done()
			<-begin
			var mine []time.Duration
			for time.Now().Before(stop) {
				d, ok := add()
				if !ok {
					errs.Add(1)
					continue
				}
				mine = append(mine, d)
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	warm.Wait()
	start = time.Now()
	stop = start.Add(*apiDur)
	close(begin)
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lats)
	r := apiResult{rate: float64(len(lats)) / elapsed.Seconds(), errors: errs.Load(), n: len(lats)}
	if len(lats) > 0 {
		r.p50 = lats[len(lats)/2]
		r.p99 = lats[min(len(lats)-1, len(lats)*99/100)]
	}
	return r, nil
}

// probe says what one GET of url answers, to explain a failed run.
func probe(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return "GET: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return fmt.Sprintf("GET: %s %q", resp.Status, b)
}

// serveDir serves root with the web tier's content handler on a loopback
// port, with the http.Server a node would use for cfg.
func serveDir(cfg web.Config, root string) (string, func(), error) {
	return serve(cfg, web.ContentHandler(os.DirFS(root), nil, cfg.ContentCache))
}

// floorHeaders are the headers the floor copies from the node's answer.
var floorHeaders = []string{"Etag", "Accept-Ranges", "Content-Type", "Last-Modified", "Content-Length"}

// serveFloor serves, on a loopback port with the http.Server a node would
// use for cfg, each bench file's bytes with the headers the node at
// nodeURL answers it with (fetched once), from memory: the least any
// net/http server must spend on these requests.
func serveFloor(cfg web.Config, client *http.Client, nodeURL string) (string, func(), error) {
	type answer struct {
		h    http.Header
		body []byte
	}
	answers := map[string]answer{}
	for _, s := range sizes {
		resp, err := client.Get(nodeURL + "/" + s.name)
		if err != nil {
			return "", nil, fmt.Errorf("floor: %w", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return "", nil, fmt.Errorf("floor: GET %s: %s %v", s.name, resp.Status, err)
		}
		h := http.Header{}
		for _, k := range floorHeaders {
			if v := resp.Header[k]; v != nil {
				h[k] = v
			}
		}
		answers["/"+s.name] = answer{h, body}
	}
	return serve(cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		for k, v := range a.h {
			h[k] = v
		}
		w.WriteHeader(http.StatusOK)
		w.Write(a.body)
	}))
}

// serve serves h on a loopback port with the http.Server a node would use
// for cfg (TLS when cfg has a certificate) and returns its base URL.
func serve(cfg web.Config, h http.Handler) (string, func(), error) {
	srv, err := web.NewHTTPServer(cfg, h)
	if err != nil {
		return "", nil, err
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	ln := web.Listener(cfg, inner)
	scheme := "http://"
	if srv.TLSConfig != nil {
		scheme = "https://"
		go srv.ServeTLS(ln, "", "")
	} else {
		go srv.Serve(ln)
	}
	return scheme + ln.Addr().String(), func() { srv.Close() }, nil
}

// tlsInfo is what one h2load request to url says of the TLS connection:
// protocol, cipher, key exchange and application protocol.
func tlsInfo(url string) string {
	out, err := exec.Command("h2load", "-n", "1", "-c", "1", url).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("h2load: %v", err)
	}
	var parts []string
	for _, l := range strings.Split(string(out), "\n") {
		for _, k := range []string{"TLS Protocol:", "Cipher:", "Server Temp Key:", "Application protocol:"} {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), k); ok {
				parts = append(parts, strings.TrimSpace(v))
			}
		}
	}
	return strings.Join(parts, ", ")
}
