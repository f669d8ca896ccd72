// Command benchvolume compares a 2-leg mirrored volume with a single raw
// leg on the same kind of file, in one run: sequential 1 MiB writes and
// reads and random 4 KiB writes and reads at queue depth 1 and 32. It
// prints a table with the ratios and writes it to -out.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
)

func main() {
	var (
		out       = flag.String("out", "", "also write the table to this file")
		dir       = flag.String("dir", "", "directory for the leg files (default: a new temporary directory)")
		dir2      = flag.String("dir2", "", "put the mirror's second leg here instead (another device, to see legs that do not share a disk)")
		sizeMB    = flag.Int64("size-mb", 512, "volume size in MiB (each leg is a little larger)")
		regionKB  = flag.Int64("region-kb", 4096, "mirror region size in KiB")
		randTime  = flag.Duration("rand-time", 2*time.Second, "duration of each random test")
		seqPasses = flag.Int("seq-passes", 1, "passes over the volume per sequential test")
		keepFiles = flag.Bool("keep", false, "keep the leg files")
		runs      = flag.Int("runs", 3, "runs of each test; the median is reported")
	)
	flag.Parse()
	if err := run(*out, *dir, *dir2, *sizeMB<<20, *regionKB<<10, *randTime, *seqPasses, *runs, *keepFiles); err != nil {
		fmt.Fprintln(os.Stderr, "benchvolume:", err)
		os.Exit(1)
	}
}

type result struct {
	name            string
	unit            string
	raw, mirr, pair float64 // pair: two raw files written in parallel (writes only)
}

// rawPair writes every block to two raw files at once with no mirror
// logic: the floor cost of keeping two copies on this storage.
type rawPair struct{ a, b blockdev.Device }

func (p rawPair) ReadAt(ctx context.Context, b []byte, off int64) error {
	return p.a.ReadAt(ctx, b, off)
}

func (p rawPair) WriteAt(ctx context.Context, b []byte, off int64) error {
	errb := make(chan error, 1)
	go func() { errb <- p.b.WriteAt(ctx, b, off) }()
	err := p.a.WriteAt(ctx, b, off)
	if e := <-errb; err == nil {
		err = e
	}
	return err
}

func (p rawPair) Flush(ctx context.Context) error {
	if err := p.a.Flush(ctx); err != nil {
		return err
	}
	return p.b.Flush(ctx)
}

func (p rawPair) Size() int64    { return p.a.Size() }
func (p rawPair) BlockSize() int { return p.a.BlockSize() }
func (p rawPair) Close() error   { return nil }

func run(out, dir, dir2 string, size, region int64, randTime time.Duration, passes, runs int, keep bool) error {
	if runs < 1 {
		return fmt.Errorf("-runs must be at least 1")
	}
	ctx := context.Background()
	if dir == "" {
		d, err := os.MkdirTemp("", "benchvolume-")
		if err != nil {
			return err
		}
		dir = d
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	var cleanups []func()
	defer func() {
		for _, f := range cleanups {
			f()
		}
	}()
	log := hclog.New(&hclog.LoggerOptions{Name: "benchvolume", Level: hclog.Warn, Output: os.Stderr})
	g, err := mirror.NewGeometry(region, blockdev.FileBlockSize, 8, size/region)
	if err != nil {
		return err
	}
	legSize := g.LegSize()
	open := func(name string) (*blockdev.File, error) {
		where := dir
		if name == "leg1.img" && dir2 != "" {
			where = dir2
			if !keep {
				cleanups = append(cleanups, func() { os.Remove(filepath.Join(dir2, name)) })
			}
		}
		return blockdev.OpenFile(filepath.Join(where, name), blockdev.OpenOptions{Create: true, CreateSize: legSize, Logger: log})
	}
	raw, err := open("raw.img")
	if err != nil {
		return err
	}
	defer raw.Close()
	raw2, err := open("raw2.img")
	if err != nil {
		return err
	}
	defer raw2.Close()
	pair := rawPair{raw, raw2}
	l0, err := open("leg0.img")
	if err != nil {
		return err
	}
	l1, err := open("leg1.img")
	if err != nil {
		return err
	}
	if _, err := mirror.Format(ctx, []blockdev.Device{l0, l1}, mirror.FormatOptions{RegionSize: region, Slots: 8, ClusterID: "bench", DataIsZero: true}); err != nil {
		return err
	}
	cfg := mirror.DefaultConfig(0)
	cfg.Legs, cfg.Logger = []blockdev.Device{l0, l1}, log
	vol, err := mirror.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer vol.Close()
	// The raw leg is used over the same span as the volume's data.
	span := vol.Size()
	var res []result
	// Each test runs raw, mirror (and raw pair for writes) in turn, runs
	// times, and keeps the median of each: the storage is shared and noisy.
	add := func(name, unit string, f func(d blockdev.Device) (float64, error)) error {
		fmt.Fprintf(os.Stderr, "%s ...\n", name)
		var rs, ms, ps []float64
		for i := 0; i < runs; i++ {
			r, err := f(raw)
			if err != nil {
				return fmt.Errorf("%s raw: %w", name, err)
			}
			m, err := f(vol)
			if err != nil {
				return fmt.Errorf("%s mirror: %w", name, err)
			}
			rs, ms = append(rs, r), append(ms, m)
			if strings.Contains(name, "write") {
				pr, err := f(pair)
				if err != nil {
					return fmt.Errorf("%s raw pair: %w", name, err)
				}
				ps = append(ps, pr)
			}
		}
		res = append(res, result{name, unit, median(rs), median(ms), median(ps)})
		return nil
	}
	rw := map[bool]string{true: "write", false: "read"}
	for _, qd := range []int{1, 32} {
		for _, write := range []bool{true, false} {
			if err := add(fmt.Sprintf("seq %s 1MiB qd%d", rw[write], qd), "MiB/s", func(d blockdev.Device) (float64, error) {
				return seq(ctx, d, span, qd, passes, write)
			}); err != nil {
				return err
			}
		}
	}
	for _, qd := range []int{1, 32} {
		for _, write := range []bool{true, false} {
			if err := add(fmt.Sprintf("rand %s 4KiB qd%d", rw[write], qd), "IOPS", func(d blockdev.Device) (float64, error) {
				return random(ctx, d, span, qd, randTime, write)
			}); err != nil {
				return err
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Volume I/O: 2-leg mirror vs one raw leg (same kind of file, O_DIRECT=%v)\n", raw.Direct())
	fmt.Fprintf(&b, "volume %d MiB, region %d KiB, median of %d runs, %s, GOMAXPROCS %d, %s\n", span>>20, region>>10, runs, time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), dir)
	fmt.Fprintf(&b, "%-22s %10s %10s %7s %12s %9s\n", "test", "raw leg", "mirror", "ratio", "2 raw files", "vs 2 raw")
	for _, r := range res {
		pair, vsPair := "-", "-"
		if r.pair > 0 {
			pair, vsPair = fmt.Sprintf("%.1f", r.pair), fmt.Sprintf("%.2fx", r.mirr/r.pair)
		}
		fmt.Fprintf(&b, "%-22s %10.1f %10.1f %6.2fx %12s %9s  %s\n", r.name, r.raw, r.mirr, r.mirr/r.raw, pair, vsPair, r.unit)
	}
	fmt.Fprintf(&b, "ratio = mirror / raw leg. \"2 raw files\" writes each request to two raw files at once with no\n"+
		"mirror logic: what keeping two copies costs on this storage when both legs share one device.\n")
	var w io.Writer = os.Stdout
	fmt.Fprint(w, b.String())
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(b.String()), 0o644)
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// seq moves span bytes in 1 MiB requests, qd at a time, and flushes at the
// end of a write pass. It returns MiB/s.
func seq(ctx context.Context, d blockdev.Device, span int64, qd, passes int, write bool) (float64, error) {
	const chunk = 1 << 20
	n := span / chunk
	start := time.Now()
	for p := 0; p < passes; p++ {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, qd)
		for w := 0; w < qd; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, chunk)
				for i := range buf {
					buf[i] = byte(i*7 + w)
				}
				for {
					i := next.Add(1) - 1
					if i >= n {
						return
					}
					var err error
					if write {
						err = d.WriteAt(ctx, buf, i*chunk)
					} else {
						err = d.ReadAt(ctx, buf, i*chunk)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return 0, err
		}
		if write {
			if err := d.Flush(ctx); err != nil {
				return 0, err
			}
		}
	}
	return float64(n*int64(passes)) / time.Since(start).Seconds(), nil
}

// random does 4 KiB requests at random aligned offsets with qd workers for
// dur, flushing at the end of a write run. It returns IOPS.
func random(ctx context.Context, d blockdev.Device, span int64, qd int, dur time.Duration, write bool) (float64, error) {
	const bs = 4096
	blocks := span / bs
	var ops atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, qd)
	start := time.Now()
	stop := start.Add(dur)
	for w := 0; w < qd; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 77))
			buf := make([]byte, bs)
			for i := 0; i < 10_000_000 && time.Now().Before(stop); i++ {
				off := rng.Int64N(blocks) * bs
				var err error
				if write {
					buf[0] = byte(i)
					err = d.WriteAt(ctx, buf, off)
				} else {
					err = d.ReadAt(ctx, buf, off)
				}
				if err != nil {
					errs <- err
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	if write {
		if err := d.Flush(ctx); err != nil {
			return 0, err
		}
	}
	return float64(ops.Load()) / time.Since(start).Seconds(), nil
}
