// Command benchiscsi compares Shoal's userspace iSCSI initiator with two
// programs built on libiscsi, on the same tgtd LUN: libiscsi's own
// iscsi-perf (reads only, random or sequential) and QEMU's qemu-img bench
// through its libiscsi block driver (sequential reads and writes; Debian's
// fio has no libiscsi engine). Rows: 4 KiB random reads at depth 1 and
// 32, 1 MiB sequential reads and writes at depth 8. It starts its own
// tgtd through fixtures/tgtrig, installs what it lacks, prints a table
// with the ratios and writes it to -out.
//
// By default the initiators run on the first CPU and tgtd on the others,
// as on separate machines; with everything on the same cores the
// figures mostly measure which process the scheduler favours.
//
//	go run ./tools/benchiscsi -out bench-results/iscsi.txt
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
)

type row struct {
	name   string
	block  int // bytes per request
	depth  int
	random bool
	write  bool
}

var rows = []row{
	{name: "4 KiB random read, depth 1", block: 4096, depth: 1, random: true},
	{name: "4 KiB random read, depth 32", block: 4096, depth: 32, random: true},
	{name: "1 MiB sequential read, depth 8", block: 1 << 20, depth: 8},
	{name: "1 MiB sequential write, depth 8", block: 1 << 20, depth: 8, write: true},
}

type result struct {
	iops float64
	mbps float64
	// cpu is the initiator's CPU time (user+system) per operation, a
	// figure a busy machine disturbs less than IOPS.
	cpu time.Duration
	err error
}

// errNA marks a peer that cannot run a row.
var errNA = errors.New("n/a")

// peer is a libiscsi-based program measured against Shoal.
type peer struct {
	name string
	// can tells whether the peer can run the row.
	can func(r row) bool
	// run measures the row; shoalIOPS sizes runs that take a count.
	run func(url string, r row, dur time.Duration, shoalIOPS float64) result
}

var peers = []peer{
	{name: "iscsi-perf", can: func(r row) bool { return !r.write }, run: iscsiPerf},
	{name: "qemu-img", can: func(r row) bool { return !r.random }, run: qemuImg},
}

// target is the least ratio to the best peer that every row must reach.
const target = 0.90

func main() {
	out := flag.String("out", "", "also write the table to this file")
	dur := flag.Duration("duration", 3*time.Second, "run time of each measurement")
	lunMiB := flag.Int("lun-mib", 512, "LUN size in MiB")
	verbose := flag.Bool("v", false, "log the rig and the initiator")
	flag.IntVar(&runs, "runs", 5, "runs of each initiator per row (the median is printed)")
	only := flag.String("only", "", "run only the rows whose name contains this text")
	layouts := flag.String("cpus", "separate,shared", "CPU layouts to measure, in order: separate (initiators on the first CPU, tgtd on the others), shared (all on all)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the Shoal runs to this file")
	flag.Parse()
	onlyRows = *only
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchiscsi:", err)
			os.Exit(1)
		}
		defer f.Close()
		profile = f
	}
	if err := run(*out, *dur, int64(*lunMiB)<<20, strings.Split(*layouts, ","), *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "benchiscsi:", err)
		os.Exit(1)
	}
}

func run(out string, dur time.Duration, lunSize int64, layouts []string, verbose bool) error {
	log := hclog.NewNullLogger()
	if verbose {
		log = hclog.New(&hclog.LoggerOptions{Name: "benchiscsi", Level: hclog.Info, Output: os.Stderr})
	}
	if lunSize <= 0 {
		return fmt.Errorf("-lun-mib must be positive")
	}
	if runs < 1 {
		return fmt.Errorf("-runs must be at least 1")
	}
	if dur < 100*time.Millisecond {
		return fmt.Errorf("-duration %v is too short (at least 100ms)", dur)
	}
	if !slices.ContainsFunc(rows, func(r row) bool { return strings.Contains(r.name, onlyRows) }) {
		return fmt.Errorf("-only %q matches no row", onlyRows)
	}
	ctx := context.Background()
	if err := tgtrig.Install(ctx); err != nil {
		return err
	}
	if err := tgtrig.InstallPackages(ctx, "qemu-utils", "qemu-block-extra"); err != nil {
		return err
	}
	if err := tgtrig.Available(); err != nil {
		return err
	}
	for _, tool := range []string{"iscsi-perf", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: %w", tool, err)
		}
	}
	for _, l := range layouts {
		if l != "separate" && l != "shared" {
			return fmt.Errorf("-cpus: unknown layout %q (separate, shared)", l)
		}
	}
	cpus, err := splitCPUs()
	if err != nil {
		return err
	}
	if cpus.target.Count() == 0 && slices.Contains(layouts, "separate") {
		return fmt.Errorf("one CPU only: run with -cpus shared")
	}
	dir, err := os.MkdirTemp("", "benchiscsi-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rig, err := tgtrig.Start(tgtrig.Config{Dir: dir, Logger: log.Named("tgtrig")})
	if err != nil {
		return err
	}
	defer rig.Close()
	tgt, err := rig.AddTarget("iqn.2026-01.io.shoal:bench")
	if err != nil {
		return err
	}
	img, err := tgt.AddLUN(1, lunSize)
	if err != nil {
		return err
	}
	// Fill the image so reads touch real pages, not holes.
	if err := fill(img, lunSize); err != nil {
		return err
	}
	url := tgt.URL(1)

	cfg, err := iscsi.ConfigFromURL(url)
	if err != nil {
		return err
	}
	cfg.Logger = log.Named("iscsi")
	cfg.QueueDepth = 64
	dev, err := iscsi.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer dev.Close()

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "iSCSI initiator: Shoal vs libiscsi (iscsi-perf, qemu-img bench), same tgtd LUN (%d MiB; median of %d alternating runs of %v)\n", lunSize>>20, runs, dur)
	fmt.Fprintf(&buf, "target: %s\n", url)
	for _, l := range layouts {
		// Set after the LUN exists: its I/O threads are tgtd's too.
		self, tgtd := cpus.initiator, cpus.target
		if l == "shared" {
			self, tgtd = cpus.all(), cpus.all()
		}
		if err := pinSelf(self); err != nil {
			return err
		}
		if err := pinProcess(rig.PID(), tgtd); err != nil {
			return err
		}
		if l == "separate" {
			fmt.Fprintf(&buf, "\nCPUs separate, as on two machines: initiators on %s, tgtd on %s\n", cpuList(self), cpuList(tgtd))
		} else {
			fmt.Fprintf(&buf, "\nCPUs shared: initiators and tgtd all on %s\n", cpuList(self))
		}
		lowest := table(ctx, &buf, dev, url, dur)
		fmt.Fprintf(&buf, "Target: Shoal at least %.2f of the faster libiscsi program on every row: %s (lowest %.2f).\n",
			target, map[bool]string{true: "met", false: "NOT met"}[lowest >= target], lowest)
	}
	fmt.Fprintln(&buf, "\niscsi-perf only reads; qemu-img bench only runs sequentially. CPU/op is each initiator process's")
	fmt.Fprintln(&buf, "user+system time per operation (the peers' includes their start and login). With shared CPUs the")
	fmt.Fprintln(&buf, "initiators take CPU from tgtd and the figures vary more from run to run with where the scheduler")
	fmt.Fprintln(&buf, "puts the processes; separate CPUs stand for an initiator and a target on different machines.")
	os.Stdout.Write(buf.Bytes())
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, buf.Bytes(), 0o644)
	}
	return nil
}

// table measures every row with Shoal and the peers, writes the table to
// buf and returns the lowest ratio of Shoal to the faster peer (0 when a
// row failed).
func table(ctx context.Context, buf *bytes.Buffer, dev *iscsi.Device, url string, dur time.Duration) float64 {
	tw := tabwriter.NewWriter(buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "workload\tShoal IOPS\tShoal MB/s\tShoal CPU/op"
	for _, p := range peers {
		head += fmt.Sprintf("\t%s IOPS\t%s CPU/op\tShoal/%s", p.name, p.name, p.name)
	}
	fmt.Fprintln(tw, head+"\t")
	lowest := math.Inf(1)
	for _, r := range rows {
		if onlyRows != "" && !strings.Contains(r.name, onlyRows) {
			continue
		}
		fmt.Fprintf(os.Stderr, "running %s ...\n", r.name)
		// Warm up the connection, the target's caches and the scheduler.
		_ = shoal(ctx, dev, r, dur/4)
		// The machine may be shared: alternate the initiators and keep
		// each one's median run.
		ss := make([]result, 0, runs)
		ps := make([][]result, len(peers))
		for i := 0; i < runs; i++ {
			s := shoal(ctx, dev, r, dur)
			ss = append(ss, s)
			for j, p := range peers {
				if p.can(r) {
					ps[j] = append(ps[j], p.run(url, r, dur, s.iops))
				}
			}
		}
		s := median(ss)
		line := fmt.Sprintf("%s\t%s\t%s\t%s", r.name, num(s.iops, s.err), num(s.mbps, s.err), cpuPerOp(s))
		best := 0.0
		for j := range peers {
			l := result{err: errNA}
			if ps[j] != nil {
				l = median(ps[j])
			}
			ratio := "n/a"
			if s.err == nil && l.err == nil && l.iops > 0 {
				ratio = fmt.Sprintf("%.2f", s.iops/l.iops)
				best = max(best, l.iops)
			}
			line += fmt.Sprintf("\t%s\t%s\t%s", num(l.iops, l.err), cpuPerOp(l), ratio)
		}
		if s.err != nil || best == 0 {
			lowest = 0
		} else {
			lowest = min(lowest, s.iops/best)
		}
		fmt.Fprintln(tw, line+"\t")
	}
	tw.Flush()
	if math.IsInf(lowest, 1) {
		return 0
	}
	return lowest
}

func cpuPerOp(r result) string {
	if r.err != nil || r.cpu == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1fµs", float64(r.cpu)/float64(time.Microsecond))
}

func num(v float64, err error) string {
	if err != nil {
		if errors.Is(err, errNA) {
			return "n/a"
		}
		return "error: " + err.Error()
	}
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func fill(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range chunk {
		chunk[i] = byte(rng.Uint32())
	}
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// shoal runs the workload through Shoal's initiator.
func shoal(ctx context.Context, dev *iscsi.Device, r row, dur time.Duration) result {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	blocks := dev.Size() / int64(r.block)
	var ops atomic.Int64
	var seq atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for w := 0; w < r.depth; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			p := make([]byte, r.block)
			for time.Now().Before(deadline) {
				var n int64
				if r.random {
					n = rng.Int64N(blocks)
				} else {
					n = (seq.Add(1) - 1) % blocks
				}
				var err error
				if r.write {
					err = dev.WriteAt(ctx, p, n*int64(r.block))
				} else {
					err = dev.ReadAt(ctx, p, n*int64(r.block))
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ops.Add(1)
			}
		}(w)
	}
	if profile != nil {
		_ = pprof.StartCPUProfile(profile)
	}
	ru0 := cpuTime()
	start := time.Now()
	wg.Wait()
	cpu := cpuTime() - ru0
	if profile != nil {
		pprof.StopCPUProfile()
		profile = nil // one profile: the first row that runs
	}
	el := time.Since(start).Seconds()
	if e := firstErr.Load(); e != nil {
		return result{err: e.(error)}
	}
	iops := float64(ops.Load()) / el
	res := result{iops: iops, mbps: iops * float64(r.block) / 1e6}
	if n := ops.Load(); n > 0 {
		res.cpu = cpu / time.Duration(n)
	}
	return res
}

// cpuTime is this process's CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runs is how often each initiator runs each row.
var runs int

// median returns the run with the median IOPS, or the first error.
func median(rs []result) result {
	var ok []result
	for _, r := range rs {
		if r.err != nil {
			return r
		}
		ok = append(ok, r)
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i].iops < ok[j].iops })
	return ok[len(ok)/2]
}

// onlyRows filters the rows by name.
var onlyRows string

// profile, when set, receives a CPU profile of the Shoal runs.
var profile *os.File

var avgRe = regexp.MustCompile(`iops average (\d+) \((\d+) MB/s\)`)

// iscsiPerf runs iscsi-perf for dur, stops it with SIGINT and reads its
// last running average.
func iscsiPerf(url string, r row, dur time.Duration, _ float64) result {
	args := []string{"-m", strconv.Itoa(r.depth), "-b", strconv.Itoa(r.block / 512)}
	if r.random {
		args = append(args, "-r")
	}
	args = append(args, url)
	cmd := exec.Command("iscsi-perf", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return result{err: err}
	}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return result{err: err}
	}
	start := time.Now()
	var last []string
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewReader(stdout)
		for {
			line, err := sc.ReadString('\r')
			if m := avgRe.FindAllStringSubmatch(line, -1); m != nil {
				mu.Lock()
				last = m[len(m)-1]
				mu.Unlock()
			}
			if err != nil {
				_, _ = io.Copy(io.Discard, sc)
				return
			}
		}
	}()
	time.Sleep(dur + 500*time.Millisecond)
	_ = cmd.Process.Signal(os.Interrupt)
	timer := time.AfterFunc(3*time.Second, func() { _ = cmd.Process.Kill() })
	<-done
	_ = cmd.Wait()
	timer.Stop()
	mu.Lock()
	defer mu.Unlock()
	if last == nil {
		return result{err: fmt.Errorf("no figures from iscsi-perf %s", strings.Join(args, " "))}
	}
	iops, _ := strconv.ParseFloat(last[1], 64)
	res := result{iops: iops, mbps: iops * float64(r.block) / 1e6}
	if ps := cmd.ProcessState; ps != nil && iops > 0 {
		ops := iops * time.Since(start).Seconds()
		res.cpu = time.Duration(float64(ps.UserTime()+ps.SystemTime()) / ops)
	}
	return res
}

var qemuRe = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// qemuImg runs qemu-img bench through QEMU's libiscsi driver: as many
// requests as Shoal made in dur, sequential from offset 0 (wrapping at
// the end of the LUN).
func qemuImg(url string, r row, dur time.Duration, shoalIOPS float64) result {
	count := int64(shoalIOPS * dur.Seconds())
	count = min(max(count, 64), 50_000_000)
	args := []string{"bench", "-f", "raw", "-t", "none", "-c", strconv.FormatInt(count, 10),
		"-d", strconv.Itoa(r.depth), "-s", strconv.Itoa(r.block), "-S", strconv.Itoa(r.block)}
	if r.write {
		args = append(args, "-w")
	}
	args = append(args, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	outb, err := cmd.CombinedOutput()
	if err != nil {
		return result{err: fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(outb))}
	}
	m := qemuRe.FindSubmatch(outb)
	if m == nil {
		return result{err: fmt.Errorf("no figures from qemu-img %s", strings.Join(args, " "))}
	}
	secs, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || secs <= 0 {
		return result{err: fmt.Errorf("qemu-img run time %q", m[1])}
	}
	iops := float64(count) / secs
	res := result{iops: iops, mbps: iops * float64(r.block) / 1e6}
	if ps := cmd.ProcessState; ps != nil {
		res.cpu = (ps.UserTime() + ps.SystemTime()) / time.Duration(count)
	}
	return res
}
