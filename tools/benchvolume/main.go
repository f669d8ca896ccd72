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
		randSecs  = flag.Duration("rand-time", 3*time.Second, "duration of each random test")
		seqPasses = flag.Int("seq-passes", 1, "passes over the volume per sequential test")
		keepFiles = flag.Bool("keep", false, "keep the leg files")
	)
	flag.Parse()
	if err := run(*out, *dir, *dir2, *sizeMB<<20, *regionKB<<10, *randSecs, *seqPasses, *keepFiles); err != nil {
		fmt.Fprintln(os.Stderr, "benchvolume:", err)
		os.Exit(1)
	}
}

type result struct {
	name      string
	unit      string
	raw, mirr float64
}

func run(out, dir, dir2 string, size, region int64, randTime time.Duration, passes int, keep bool) error {
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
	add := func(name, unit string, f func(d blockdev.Device) (float64, error)) error {
		fmt.Fprintf(os.Stderr, "%s ...\n", name)
		r, err := f(raw)
		if err != nil {
			return fmt.Errorf("%s raw: %w", name, err)
		}
		m, err := f(vol)
		if err != nil {
			return fmt.Errorf("%s mirror: %w", name, err)
		}
		res = append(res, result{name, unit, r, m})
		return nil
	}
	for _, qd := range []int{1, 32} {
		if err := add(fmt.Sprintf("seq write 1MiB qd%d", qd), "MiB/s", func(d blockdev.Device) (float64, error) {
			return seq(ctx, d, span, qd, passes, true)
		}); err != nil {
			return err
		}
		if err := add(fmt.Sprintf("seq read 1MiB qd%d", qd), "MiB/s", func(d blockdev.Device) (float64, error) {
			return seq(ctx, d, span, qd, passes, false)
		}); err != nil {
			return err
		}
	}
	for _, qd := range []int{1, 32} {
		if err := add(fmt.Sprintf("rand write 4KiB qd%d", qd), "IOPS", func(d blockdev.Device) (float64, error) {
			return random(ctx, d, span, qd, randTime, true)
		}); err != nil {
			return err
		}
		if err := add(fmt.Sprintf("rand read 4KiB qd%d", qd), "IOPS", func(d blockdev.Device) (float64, error) {
			return random(ctx, d, span, qd, randTime, false)
		}); err != nil {
			return err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Volume I/O: 2-leg mirror vs one raw leg (same kind of file, O_DIRECT=%v)\n", raw.Direct())
	fmt.Fprintf(&b, "volume %d MiB, region %d KiB, %s, GOMAXPROCS %d, %s\n", span>>20, region>>10, time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), dir)
	fmt.Fprintf(&b, "%-22s %12s %12s %8s\n", "test", "raw leg", "mirror", "ratio")
	for _, r := range res {
		fmt.Fprintf(&b, "%-22s %12.1f %12.1f %7.2fx  %s\n", r.name, r.raw, r.mirr, r.mirr/r.raw, r.unit)
	}
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
