// Command benchstore measures the shared store on the demo's volume (two
// 256 MiB image-file legs, 1 MiB regions, 8 slots) with two nodes on a
// real lock manager over an embedded etcd, in one run, and prints a table
// with the ratios against ext4 (an image of the volume's size mounted on
// a loop device, or the machine's own file system on the same disk when
// that is not possible; the heading says which). Store and peer take
// turns within each row, so that a change in the machine's load meets
// both; each row says what one operation asked of etcd and of the legs.
//
//   - one node: create + 4 KiB write + fsync of small files; 1 MiB
//     sequential write and read (cold: the legs' and the peer image's
//     pages dropped) of a large file; readdir and stat of a 10,000-entry
//     directory;
//   - two nodes creating small files in different directories, against
//     node a alone, and beside it ext4 doing the same with two writers
//     against one (what a second writer gains on this machine);
//   - two nodes alternating on one file: the hand-over's p50 and p99;
//   - ls -l (ReadDir, then each entry's Info) of the 10,000-entry
//     directory on one node while the other creates and removes files in
//     it, and beside it the same listing with a Stat of each path;
//   - mirrored 4 KiB random writes against one raw leg file, and against
//     two raw files written at once (both legs share one disk and the
//     CPUs here: the least a two-leg mirror does);
//   - replay of a crashed node's full journal and of one of 100
//     transactions.
//
// Usage: go run ./tools/benchstore [-out file] [-dur 3s] [-random-runs 3] [-only small,seq,...] [-cpuprofile file] [-blockprofile file] [-mutexprofile file]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

func main() {
	var o options
	flag.StringVar(&o.out, "out", "", "also write the table to this file")
	flag.StringVar(&o.dir, "dir", "", "directory for the legs, the ext4 image and etcd (default: a new temporary directory on the default temporary disk)")
	flag.DurationVar(&o.dur, "dur", 3*time.Second, "duration of each timed small-file and random-write run")
	flag.IntVar(&o.entries, "entries", 10000, "entries of the big directory")
	flag.Int64Var(&o.seqMB, "seq-mb", 64, "size of the large file in MiB")
	flag.IntVar(&o.rounds, "rounds", 200, "hand-overs of the alternation row")
	flag.IntVar(&o.randomRuns, "random-runs", 3, "runs of each random-write device (the rows give the medians); more make the ratios steadier on a loaded machine")
	flag.BoolVar(&o.keep, "keep", false, "keep the files")
	flag.DurationVar(&o.stepTimeout, "step-timeout", 10*time.Minute, "give up (and stop the run) when one step takes longer")
	flag.StringVar(&o.only, "only", "", "run only these steps (comma-separated: small,seq,bigdir,two,alt,churn,replay,random; churn needs bigdir, which it adds)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the steps to this file")
	flag.StringVar(&o.blockProfile, "blockprofile", "", "write a profile of where the steps' goroutines blocked (channels, locks; every event) to this file")
	flag.StringVar(&o.mutexProfile, "mutexprofile", "", "write a profile of the steps' contended mutexes (every event) to this file")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "benchstore:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "benchstore:", err)
		os.Exit(1)
	}
}

type options struct {
	out, dir    string
	dur         time.Duration
	entries     int
	seqMB       int64
	rounds      int
	randomRuns  int
	keep        bool
	stepTimeout time.Duration
	only        string
	cpuProfile  string
	// blockProfile and mutexProfile: files for runtime/pprof's "block"
	// and "mutex" profiles, sampled at every event during the steps.
	blockProfile, mutexProfile string
}

func (o options) validate() error {
	switch {
	case o.dur < 200*time.Millisecond:
		return fmt.Errorf("-dur %v is too short to measure (at least 200ms)", o.dur)
	case o.entries < 100 || o.entries > 100000:
		return fmt.Errorf("-entries %d: want 100 to 100000", o.entries)
	case o.seqMB < 1 || o.seqMB > 128:
		return fmt.Errorf("-seq-mb %d: want 1 to 128 (the volume is 256 MiB)", o.seqMB)
	case o.rounds < 10:
		return fmt.Errorf("-rounds %d: want at least 10", o.rounds)
	case o.randomRuns < 1 || o.randomRuns > 50:
		return fmt.Errorf("-random-runs %d: want 1 to 50", o.randomRuns)
	case o.stepTimeout < 10*time.Second:
		return fmt.Errorf("-step-timeout %v: want at least 10s", o.stepTimeout)
	}
	_, err := o.steps()
	return err
}

func run(o options) error {
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "benchstore-")
		if err != nil {
			return err
		}
		dir = d
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "benchstore", Level: hclog.Error, Output: os.Stderr})
	r, err := newRig(dir, log)
	if err != nil {
		return err
	}
	defer r.close()
	b := &bench{o: o, r: r}
	peer := mountExt4(dir, volumeSize())
	defer peer.cleanup()
	// Interrupted: the loop mount and the files go all the same.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if _, ok := <-sig; !ok {
			return
		}
		fmt.Fprintln(os.Stderr, "benchstore: interrupted; cleaning up")
		peer.cleanup()
		r.close()
		if o.dir == "" && !o.keep {
			os.RemoveAll(dir)
		}
		os.Exit(130)
	}()
	b.peer = hostFS{peer.root}
	b.peerImg = peer.img
	berr := b.all()
	var sb strings.Builder
	fmt.Fprintf(&sb, "Shared store on the demo's volume (2 image-file legs of %d MiB, %d KiB regions, %d slots), two nodes on the lock manager over etcd\n", demoLegSize>>20, demoRegion>>10, demoSlots)
	fmt.Fprintf(&sb, "peer: %s\n", peer.how)
	fmt.Fprintf(&sb, "%s, GOMAXPROCS %d, %s; figures from a shared machine are noisy\n", time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), dir)
	fmt.Fprintf(&sb, "%-44s %12s %12s %8s %-12s %s\n", "test", "store", "peer", "ratio", "target", "unit")
	for _, row := range b.rows {
		sb.WriteString(row.String())
		sb.WriteByte('\n')
	}
	fmt.Fprintf(&sb, "ratio = store / peer for rates, peer / store for times (above 1 is the store ahead); the peer of the\n"+
		"two-node row is node a alone, of the random-write rows one raw leg file and two raw files written at once.\n")
	fmt.Print(sb.String())
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(o.out, []byte(sb.String()), 0o644); err != nil {
			return err
		}
	}
	return berr
}

var allSteps = []string{"small", "seq", "bigdir", "two", "alt", "churn", "replay", "random"}

// steps returns the steps to run (-only; all when empty).
func (o options) steps() (map[string]bool, error) {
	want := map[string]bool{}
	if o.only == "" {
		for _, s := range allSteps {
			want[s] = true
		}
		return want, nil
	}
	for _, s := range strings.Split(o.only, ",") {
		if !slices.Contains(allSteps, s) {
			return nil, fmt.Errorf("-only: no step %q (steps: %s)", s, strings.Join(allSteps, ","))
		}
		want[s] = true
	}
	if want["churn"] {
		want["bigdir"] = true // the directory it lists
	}
	return want, nil
}

// volumeSize is the demo volume's usable size: the ext4 image gets as much.
func volumeSize() int64 {
	g, err := fitDemo()
	if err != nil {
		return demoLegSize
	}
	return g.VolumeSize()
}

// row is one line of the table.
type row struct {
	name, unit  string
	store, peer float64 // peer 0: no peer
	timeLike    bool    // lower is better: the ratio is peer/store
	target      float64 // minimum ratio (or, with absolute, the bound); 0: none
	absolute    bool    // target is a bound on the store's figure (timeLike: at most)
	note        string
}

func (r row) ratio() float64 {
	if r.peer == 0 || r.store == 0 {
		return 0
	}
	if r.timeLike {
		return r.peer / r.store
	}
	return r.store / r.peer
}

func (r row) String() string {
	if r.unit == "FAILED" {
		return fmt.Sprintf("%-44s FAILED: %s", r.name, r.note)
	}
	peer, ratio := "-", "-"
	if r.peer != 0 {
		peer = fmt.Sprintf("%.1f", r.peer)
		ratio = fmt.Sprintf("%.2fx", r.ratio())
	}
	target := "-"
	switch {
	case r.target != 0 && r.absolute:
		ok := r.store <= r.target
		if !r.timeLike {
			ok = r.store >= r.target
		}
		target = fmt.Sprintf("<%g %s", r.target, verdict(ok))
	case r.target != 0:
		target = fmt.Sprintf(">=%.1fx %s", r.target, verdict(r.ratio() >= r.target))
	}
	s := fmt.Sprintf("%-44s %12.1f %12s %8s %-12s %s", r.name, r.store, peer, ratio, target, r.unit)
	if r.note != "" {
		s += "  (" + r.note + ")"
	}
	return s
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
