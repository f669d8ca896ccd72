// Command benchiscsi compares Shoal's userspace iSCSI initiator with
// libiscsi's iscsi-perf on the same tgtd LUN: 4 KiB random reads at depth
// 1 and 32, 1 MiB sequential reads, and 1 MiB sequential writes (Shoal
// only: iscsi-perf only reads, and Debian's fio has no libiscsi engine).
// It starts its own tgtd through fixtures/tgtrig, prints a table with the
// ratios and writes it to -out.
//
//	go run ./tools/benchiscsi -out bench-results/iscsi.txt
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
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

func main() {
	out := flag.String("out", "", "also write the table to this file")
	dur := flag.Duration("duration", 3*time.Second, "run time of each measurement")
	lunMiB := flag.Int("lun-mib", 512, "LUN size in MiB")
	verbose := flag.Bool("v", false, "log the rig and the initiator")
	flag.IntVar(&runs, "runs", 5, "runs of each initiator per row (the median is printed)")
	only := flag.String("only", "", "run only the rows whose name contains this text")
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
	if err := run(*out, *dur, int64(*lunMiB)<<20, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "benchiscsi:", err)
		os.Exit(1)
	}
}

func run(out string, dur time.Duration, lunSize int64, verbose bool) error {
	log := hclog.NewNullLogger()
	if verbose {
		log = hclog.New(&hclog.LoggerOptions{Name: "benchiscsi", Level: hclog.Info, Output: os.Stderr})
	}
	if err := tgtrig.Install(context.Background()); err != nil {
		return err
	}
	if err := tgtrig.Available(); err != nil {
		return err
	}
	if _, err := exec.LookPath("iscsi-perf"); err != nil {
		return fmt.Errorf("iscsi-perf not found (apt-get install libiscsi-bin): %w", err)
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
	ctx := context.Background()
	dev, err := iscsi.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer dev.Close()

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "iSCSI initiator: Shoal vs libiscsi iscsi-perf, same tgtd LUN (%d MiB; median of %d alternating runs of %v)\n", lunSize>>20, runs, dur)
	fmt.Fprintf(&buf, "target: %s\n\n", url)
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tShoal IOPS\tShoal MB/s\tShoal CPU/op\tlibiscsi IOPS\tlibiscsi MB/s\tlibiscsi CPU/op\tShoal/libiscsi\t")
	for _, r := range rows {
		if onlyRows != "" && !strings.Contains(r.name, onlyRows) {
			continue
		}
		fmt.Fprintf(os.Stderr, "running %s ...\n", r.name)
		// The machine may be shared: alternate the two initiators and
		// keep each one's median run.
		var ss, ls []result
		for i := 0; i < runs; i++ {
			ss = append(ss, shoal(ctx, dev, r, dur))
			if !r.write {
				ls = append(ls, libiscsi(url, r, dur))
			}
		}
		s := median(ss)
		l := result{err: fmt.Errorf("n/a")}
		if !r.write {
			l = median(ls)
		}
		ratio := "n/a"
		if s.err == nil && l.err == nil && l.iops > 0 {
			ratio = fmt.Sprintf("%.2f", s.iops/l.iops)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, num(s.iops, s.err), num(s.mbps, s.err), cpuPerOp(s),
			num(l.iops, l.err), num(l.mbps, l.err), cpuPerOp(l), ratio)
	}
	tw.Flush()
	fmt.Fprintln(&buf, "\nlibiscsi has no write benchmark in libiscsi-bin and Debian's fio lacks the libiscsi engine,")
	fmt.Fprintln(&buf, "so the write row has no peer. Target: Shoal at least 0.90 of libiscsi on every read row.")
	fmt.Fprintln(&buf, "CPU/op is the initiator process's user+system time per operation (libiscsi's includes its login).")
	os.Stdout.Write(buf.Bytes())
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, buf.Bytes(), 0o644)
	}
	return nil
}

func cpuPerOp(r result) string {
	if r.err != nil || r.cpu == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1fµs", float64(r.cpu)/float64(time.Microsecond))
}

func num(v float64, err error) string {
	if err != nil {
		if err.Error() == "n/a" {
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

// libiscsi runs iscsi-perf for dur, stops it with SIGINT and reads its
// last running average.
func libiscsi(url string, r row, dur time.Duration) result {
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
