package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/store"
)

type bench struct {
	o       options
	r       *rig
	peer    fsys
	peerImg string // the peer's image file, if any
	rows    []row
	a, b    *node
}

func fitDemo() (mirror.Geometry, error) {
	return mirror.FitGeometry(demoRegion, blockdev.FileBlockSize, demoSlots, demoLegSize)
}

func (b *bench) add(r row) {
	b.rows = append(b.rows, r)
	fmt.Fprintln(os.Stderr, r.String())
}

func (b *bench) all() (err error) {
	ctx := context.Background()
	if b.a, err = b.r.startNode(ctx, "a", 0, false); err != nil {
		return err
	}
	defer func() {
		// Bounded: a node left stuck by a hung step must not hang the end.
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for _, n := range []*node{b.b, b.a} {
			if n != nil {
				if serr := n.stop(sctx); serr != nil && err == nil {
					err = serr
				}
			}
		}
	}()
	if _, err := store.Format(ctx, b.a.vol, store.FormatOptions{Slots: demoSlots, Label: "benchstore"}); err != nil {
		return fmt.Errorf("format the store: %w", err)
	}
	if err := b.a.openStore(ctx, b.r.log); err != nil {
		return err
	}
	if b.b, err = b.r.startNode(ctx, "b", 1, true); err != nil {
		return err
	}
	want, _ := b.o.steps()
	if b.o.cpuProfile != "" {
		f, err := os.Create(b.o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	for _, p := range []struct{ file, name string }{{b.o.blockProfile, "block"}, {b.o.mutexProfile, "mutex"}} {
		if p.file == "" {
			continue
		}
		stop := startContentionProfile(p.name)
		defer func() {
			if err := stop(p.file); err != nil {
				fmt.Fprintf(os.Stderr, "benchstore: %s profile: %v\n", p.name, err)
			}
		}()
	}
	failed := 0
	for _, step := range []struct {
		name string
		fn   func(context.Context) error
	}{
		{"small", b.smallFiles},
		{"seq", b.sequential},
		{"bigdir", b.bigDir},
		{"two", b.twoNodes},
		{"alt", b.alternation},
		{"churn", b.listUnderChurn},
		{"replay", b.replay},
		{"random", b.randomWrites},
	} {
		if !want[step.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "%s ...\n", step.name)
		done := make(chan error, 1)
		go func() { done <- step.fn(ctx) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(b.o.stepTimeout):
			// The store's calls take no context: a hung one cannot be
			// called off, and what the nodes hold is unknown; the run
			// ends here with what it has.
			b.add(row{name: step.name, unit: "FAILED", note: fmt.Sprintf("did not finish within %v (-step-timeout); the run stops here", b.o.stepTimeout)})
			return fmt.Errorf("step %q hung", step.name)
		}
		if err != nil {
			// The row says so and the run goes on with the next.
			failed++
			b.add(row{name: step.name, unit: "FAILED", note: err.Error()})
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of the benchmark's steps failed (see the table)", failed)
	}
	return nil
}

var block4k = bytes.Repeat([]byte("shoal-4k"), 512)

// createFor creates small files dir/fNNNNNN on f for d; returns files/s
// and the number of files.
func createFor(f fsys, dir string, d time.Duration) (float64, int, error) {
	if err := f.mkdirAll(dir); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	n := 0
	for ; n < 1_000_000 && time.Since(start) < d; n++ {
		if err := f.createSync(fmt.Sprintf("%s/f%06d", dir, n), block4k); err != nil {
			return 0, 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), n, nil
}

// smallFiles interleaves store and peer runs (rounds of d/rounds each),
// so that a change in the machine's load meets both alike.
func (b *bench) smallFiles(ctx context.Context) error {
	const rounds = 3
	var s, p float64
	var files int
	c0 := b.a.cost()
	for i := 0; i < rounds; i++ {
		sr, n, err := createFor(storeFS{b.a.st}, fmt.Sprintf("small%d", i), b.o.dur/rounds)
		if err != nil {
			return err
		}
		pr, _, err := createFor(b.peer, fmt.Sprintf("small%d", i), b.o.dur/rounds)
		if err != nil {
			return err
		}
		s, p, files = s+sr/rounds, p+pr/rounds, files+n
	}
	b.add(row{name: "create+4KiB write+fsync, one node", unit: "files/s", store: s, peer: p, target: 0.5,
		note: fmt.Sprintf("%d interleaved rounds; %s", rounds, b.a.cost().per(c0, float64(files)))})
	return nil
}

// sequential writes (then reads) the large file on the store and on the
// peer, in turn, seqRounds times; each round removes both files again.
// A write into regions the node never wrote also takes the lock of each
// region (two etcd writes for each MiB: the region lock and the hold on
// its checksum area), which a node that has run a while holds cached.
// The allocator gives the blocks freed by the previous round again (its
// groups in the same order, first fit), so only the first round writes
// untouched regions; the rows give the median of the rounds after it and
// say what the first one did.
func (b *bench) sequential(ctx context.Context) error {
	const coldRounds, seqRounds = 1, 4
	total := b.o.seqMB << 20
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	mibs := func(f fsys, write bool) (float64, error) {
		if !write {
			// Cold: neither the legs' nor the peer's image's pages stay
			// in the machine's page cache (the peer drops its file's).
			for _, p := range append(append([]string(nil), b.r.legs...), b.peerImg) {
				if p == "" {
					continue
				}
				if err := dropCache(p); err != nil {
					return 0, err
				}
			}
		}
		start := time.Now()
		if write {
			if err := f.writeSeq("large", total, chunk); err != nil {
				return 0, err
			}
		} else {
			n, err := f.readSeq("large", chunk)
			if err != nil {
				return 0, err
			}
			if n != total {
				return 0, fmt.Errorf("read %d bytes of %d", n, total)
			}
		}
		return float64(total>>20) / time.Since(start).Seconds(), nil
	}
	// Two raw files beside the legs (O_DIRECT where the legs are), each
	// MiB written to both at once, both synced at the end, in the same
	// rounds:
	// the least a two-leg mirror writes for a MiB when its legs share a
	// disk. Written over once first, as the legs and the peer's image
	// were.
	pair, closePair, err := b.r.openRawPair("seq-raw", total)
	if err != nil {
		return err
	}
	defer closePair()
	pairMiBs := func() (float64, error) {
		start := time.Now()
		for off := int64(0); off < total; off += int64(len(chunk)) {
			if err := pair.WriteAt(ctx, chunk, off); err != nil {
				return 0, err
			}
		}
		if err := pair.Flush(ctx); err != nil {
			return 0, err
		}
		return float64(total>>20) / time.Since(start).Seconds(), nil
	}
	if _, err := pairMiBs(); err != nil {
		return err
	}
	type figures struct {
		s, p []float64
		cost []string
	}
	var w, r figures
	var pairs []float64
	for round := 0; round < seqRounds; round++ {
		for _, write := range []bool{true, false} {
			fig := &r
			if write {
				fig = &w
			}
			c0 := b.a.cost()
			s, err := mibs(storeFS{b.a.st}, write)
			if err != nil {
				return err
			}
			fig.cost = append(fig.cost, strings.TrimPrefix(b.a.cost().per(c0, float64(b.o.seqMB)), "per op: "))
			p, err := mibs(b.peer, write)
			if err != nil {
				return err
			}
			fig.s, fig.p = append(fig.s, s), append(fig.p, p)
			if write {
				p2, err := pairMiBs()
				if err != nil {
					return err
				}
				pairs = append(pairs, p2)
			}
		}
		if err := b.a.st.Remove("large"); err != nil {
			return err
		}
		if err := b.peer.remove("large"); err != nil {
			return err
		}
	}
	for _, write := range []bool{true, false} {
		fig, name, what := r, fmt.Sprintf("sequential read 1MiB, %d MiB file", b.o.seqMB), "reads"
		if write {
			fig, name, what = w, fmt.Sprintf("sequential write 1MiB+fsync, %d MiB file", b.o.seqMB), "writes"
		}
		b.add(row{name: name, unit: "MiB/s", store: percentile(fig.s[coldRounds:], 0.5), peer: percentile(fig.p[coldRounds:], 0.5), target: 0.8,
			note: fmt.Sprintf("median of rounds %d-%d (store and peer in turn; region locks cached); store %s %s, peer %s; per MiB: %s; round 1 (untouched regions): %.0f vs %.0f, %s",
				coldRounds+1, seqRounds, what, fmtList(fig.s[coldRounds:]), fmtList(fig.p[coldRounds:]), fig.cost[len(fig.cost)-1], fig.s[0], fig.p[0], fig.cost[0])})
		if write {
			b.add(row{name: "  the disk: 1MiB writes+fdatasync, 2 raw files", unit: "MiB/s", store: percentile(fig.s[coldRounds:], 0.5), peer: percentile(pairs[coldRounds:], 0.5),
				note: fmt.Sprintf("not the store: the same writes to two raw files at once (O_DIRECT as the legs, beside them), both synced at the end, in the same rounds: the least a two-leg mirror writes for a MiB when its legs share a disk, where ext4 writes it once; 2 raw files %s, ext4 %s, the store %s (rounds %d-%d)",
					fmtList(pairs[coldRounds:]), fmtList(fig.p[coldRounds:]), fmtList(fig.s[coldRounds:]), coldRounds+1, seqRounds)})
		}
	}
	return nil
}

func fmtList(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(parts, ", ")
}

// listStat reads dir and stats every entry; it returns both times in ms.
func listStat(f fsys, dir string, want int) (readdir, stat float64, err error) {
	start := time.Now()
	names, err := f.readDir(dir)
	if err != nil {
		return 0, 0, err
	}
	readdir = float64(time.Since(start).Microseconds()) / 1000
	if len(names) < want {
		return 0, 0, fmt.Errorf("readdir %s: %d entries, want at least %d", dir, len(names), want)
	}
	start = time.Now()
	for _, n := range names {
		if err := f.stat(dir + "/" + n); err != nil && !isNotExist(err) {
			return 0, 0, err
		}
	}
	return readdir, float64(time.Since(start).Microseconds()) / 1000, nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

func (b *bench) bigDir(ctx context.Context) error {
	n := b.o.entries
	if err := (storeFS{b.a.st}).populate("big", n); err != nil {
		return err
	}
	if err := b.peer.populate("big", n); err != nil {
		return err
	}
	sr, ss, err := listStat(storeFS{b.a.st}, "big", n)
	if err != nil {
		return err
	}
	pr, ps, err := listStat(b.peer, "big", n)
	if err != nil {
		return err
	}
	b.add(row{name: fmt.Sprintf("readdir of %d entries, one node", n), unit: "ms", store: sr, peer: pr, timeLike: true, note: "caches warm on both"})
	b.add(row{name: fmt.Sprintf("stat of %d entries, one node", n), unit: "ms", store: ss, peer: ps, timeLike: true, note: "caches warm on both"})
	return nil
}

// twoNodes compares two nodes creating files at once, each in its own
// directory, with node a alone; alone and together alternate, in rounds,
// so that a change in the machine's load meets both alike. In the same
// rounds the peer file system does the same with one writer and with two
// (own directories): how far a second writer of this work gets on this
// machine's CPUs and disk when no lock manager stands between them.
func (b *bench) twoNodes(ctx context.Context) error {
	const rounds = 3
	var alone, together, ra, rb, peer1, peer2 float64
	ca, cb := b.a.cost(), b.b.cost()
	var files, filesA int
	d := b.o.dur / rounds
	for r := 0; r < rounds; r++ {
		a, na, err := createFor(storeFS{b.a.st}, fmt.Sprintf("two-alone%d", r), d)
		if err != nil {
			return err
		}
		filesA += na
		p1, _, err := createFor(b.peer, fmt.Sprintf("two-alone%d", r), d)
		if err != nil {
			return err
		}
		rates, ns, err := createAtOnce([]fsys{storeFS{b.a.st}, storeFS{b.b.st}}, []string{fmt.Sprintf("two-a%d", r), fmt.Sprintf("two-b%d", r)}, d)
		if err != nil {
			return err
		}
		p2, _, err := createAtOnce([]fsys{b.peer, b.peer}, []string{fmt.Sprintf("two-a%d", r), fmt.Sprintf("two-b%d", r)}, d)
		if err != nil {
			return err
		}
		alone += a / rounds
		peer1 += p1 / rounds
		ra, rb = ra+rates[0]/rounds, rb+rates[1]/rounds
		together += (rates[0] + rates[1]) / rounds
		peer2 += (p2[0] + p2[1]) / rounds
		files += ns[1]
		filesA += ns[0]
	}
	b.add(row{name: "create+4KiB+fsync, 2 nodes, own directories", unit: "files/s", store: together, peer: alone, target: 1.6,
		note: fmt.Sprintf("%.0f + %.0f; peer: node a alone; %d interleaved rounds; node b %s; node a (alone and together) %s", ra, rb, rounds, b.b.cost().per(cb, float64(files)), b.a.cost().per(ca, float64(filesA)))})
	b.add(row{name: "  ext4: 2 writers vs 1, own directories", unit: "files/s", store: peer2, peer: peer1,
		note: fmt.Sprintf("not the store: the peer file system doing the row above's work with two writers (%.0f files/s) against one, in the same rounds: what a second writer gains on this machine's CPUs and disk with no lock manager between them", peer2)})
	return nil
}

// createAtOnce runs createFor on each file system at once, fss[i] in
// dirs[i], for d; it returns each one's files/s and files.
func createAtOnce(fss []fsys, dirs []string, d time.Duration) ([]float64, []int, error) {
	rates := make([]float64, len(fss))
	ns := make([]int, len(fss))
	errs := make([]error, len(fss))
	var wg sync.WaitGroup
	for i, f := range fss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rates[i], ns[i], errs[i] = createFor(f, dirs[i], d)
		}()
	}
	wg.Wait()
	return rates, ns, errors.Join(errs...)
}

func percentile(xs []float64, p float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// alternation: the nodes take turns on one file; each turn reads what the
// other node just wrote (the lock and the file's new contents move over:
// the hand-over), then writes its own.
func (b *bench) alternation(ctx context.Context) error {
	nodes := []*store.Store{b.a.st, b.b.st}
	if err := nodes[0].MkdirAll("pingpong", 0o755); err != nil {
		return err
	}
	prev := []byte("round -1")
	if err := nodes[0].WriteFile("pingpong/f", prev, 0o644); err != nil {
		return err
	}
	var lat []float64
	for i := 0; i < b.o.rounds; i++ {
		st := nodes[(i+1)%2]
		start := time.Now()
		got, err := st.ReadFile("pingpong/f")
		lat = append(lat, float64(time.Since(start).Microseconds())/1000)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, prev) {
			return fmt.Errorf("round %d: read %q, the other node wrote %q", i, got, prev)
		}
		prev = []byte(fmt.Sprintf("round %d %s", i, block4k[:i%4000]))
		if err := st.WriteFile("pingpong/f", prev, 0o644); err != nil {
			return err
		}
	}
	b.add(row{name: "2 nodes alternating on one file: p50", unit: "ms", store: percentile(lat, 0.5), note: fmt.Sprintf("read after the other node's write, %d turns", len(lat))})
	b.add(row{name: "2 nodes alternating on one file: p99", unit: "ms", store: percentile(lat, 0.99)})
	return nil
}

// listInfo lists dir and reads every entry's Info, as `ls -l` (and Go's
// fs.WalkDir with Info, http.FileServer's listing) does; an entry
// removed meanwhile does not count. It returns the time in ms.
func listInfo(f fsys, dir string, want int) (float64, error) {
	start := time.Now()
	es, err := f.readDirEntries(dir)
	if err != nil {
		return 0, err
	}
	if len(es) < want {
		return 0, fmt.Errorf("readdir %s: %d entries, want at least %d", dir, len(es), want)
	}
	for _, e := range es {
		if _, err := e.Info(); err != nil && !isNotExist(err) {
			return 0, err
		}
	}
	return float64(time.Since(start).Microseconds()) / 1000, nil
}

// listUnderChurn lists the big directory with each entry's Info (ls -l),
// and again with a Stat of each entry's path, while the other node (the
// peer: another goroutine) creates and removes files in it; the store and
// the peer take turns; the slowest of 3 passes counts.
func (b *bench) listUnderChurn(ctx context.Context) error {
	measure := func(lister, churner fsys, byPath bool) (float64, int64, error) {
		stop := make(chan struct{})
		var churned atomic.Int64
		cerr := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					cerr <- nil
					return
				default:
				}
				name := fmt.Sprintf("big/churn-%d", i)
				if err := churner.createSync(name, block4k[:100]); err != nil {
					cerr <- err
					return
				}
				if err := churner.remove(name); err != nil {
					cerr <- err
					return
				}
				churned.Add(2)
			}
		}()
		// The churner first gets going (its first operations take the
		// directory's lock over), then the listing passes run while it
		// goes on.
		deadline := time.Now().Add(30 * time.Second)
		for churned.Load() < 20 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		worst := 0.0
		var err error
		base := churned.Load()
		passes := 10 // an Info listing is short: more of them meet the churn
		if byPath {
			passes = 3
		}
		for pass := 0; pass < passes && err == nil; pass++ {
			var t float64
			if byPath {
				var r, s float64
				r, s, err = listStat(lister, "big", b.o.entries)
				t = r + s
			} else {
				t, err = listInfo(lister, "big", b.o.entries)
			}
			worst = max(worst, t)
		}
		close(stop)
		if cerr := <-cerr; err == nil {
			err = cerr
		}
		return worst, churned.Load() - base, err
	}
	for _, byPath := range []bool{false, true} {
		s, sc, err := measure(storeFS{b.a.st}, storeFS{b.b.st}, byPath)
		if err != nil {
			return err
		}
		p, _, err := measure(b.peer, b.peer, byPath)
		if err != nil {
			return err
		}
		r := row{name: fmt.Sprintf("readdir+Info %d entries, other node churns", b.o.entries), unit: "ms", store: s, peer: p, timeLike: true,
			target: 1000, absolute: true, note: fmt.Sprintf("ls -l: ReadDir, then each entry's Info; slowest of 10 passes; %d creates+removes meanwhile", sc)}
		if byPath {
			r.name, r.target = fmt.Sprintf("readdir+stat(path) %d entries, other churns", b.o.entries), 0
			r.note = fmt.Sprintf("ReadDir, then Stat of each dir/name; slowest of 3 passes; %d creates+removes meanwhile; a Stat the lock caches cannot answer takes the directory's lock from the churning node and keeps it 20 ms, as GFS2's glock minimum hold time does", sc)
		}
		b.add(r)
	}
	return nil
}

// replay crashes node b with a full journal and then with a journal of 100
// transactions; node a recovers it each time (the figure: its store
// replay), checks b's last acknowledged file, and b comes back.
func (b *bench) replay(ctx context.Context) error {
	run := func(label string, txs int, full bool) error {
		st := b.b.st
		dir := "journal-" + b.b.name
		if err := st.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		// The directory's creation may have been the last checkpoint's
		// trigger; count from here.
		if full {
			base := st.Stats().Checkpoints
			k := 0
			for ; st.Stats().Checkpoints == base; k++ {
				if k > 1_000_000 {
					return fmt.Errorf("the journal never filled")
				}
				if err := st.WriteFile(fmt.Sprintf("%s/w%06d", dir, k), block4k, 0o644); err != nil {
					return err
				}
			}
			// k transactions filled it; the k-th went in after the
			// checkpoint. k-2 more leave it one transaction short.
			txs = k - 2
		}
		base := st.Stats().Checkpoints
		var last string
		for i := 0; i < txs; i++ {
			last = fmt.Sprintf("%s/t%06d", dir, i)
			if err := st.WriteFile(last, []byte(last), 0o644); err != nil {
				return err
			}
		}
		note := ""
		if st.Stats().Checkpoints != base {
			note = "a checkpoint came in between; "
		}
		if err := b.b.crash(ctx, b.a); err != nil {
			return err
		}
		rs, err := b.a.recover(ctx, b.b)
		b.b.release()
		if err != nil {
			b.b = nil
			if rs.Duration > 0 {
				b.add(row{name: "replay of " + label, unit: "ms", store: float64(rs.Duration.Microseconds()) / 1000,
					note: fmt.Sprintf("%d transactions, %d blocks in place; then: %v", rs.Transactions, rs.Blocks, err)})
			}
			return err
		}
		got, err := b.a.st.ReadFile(last)
		if err != nil || string(got) != last {
			return fmt.Errorf("after replay, %s reads %q (%v)", last, got, err)
		}
		b.add(row{name: "replay of " + label, unit: "ms", store: float64(rs.Duration.Microseconds()) / 1000,
			note: fmt.Sprintf("%s%d transactions, %d blocks in place", note, rs.Transactions, rs.Blocks)})
		name := b.b.name + "2"
		nb, err := b.r.startNode(ctx, name, 1, true)
		if err != nil {
			b.b = nil
			return fmt.Errorf("restart %s: %w", name, err)
		}
		b.b = nb
		return nil
	}
	if err := run("a full journal", 0, true); err != nil {
		return err
	}
	return run("a journal of 100 transactions", 100, false)
}

// randomWrites compares mirrored 4 KiB random writes with one raw leg
// file, at queue depth 1 and 32, on a second volume of the demo's
// geometry (the store's volume keeps its tree), opened with the lock
// manager of a node that just joined and, again, of node a, which holds
// the store's locks after the rows above. Each worker writes its own
// blocks (the writes never overlap, as CallerOrdersWrites promises).
func (b *bench) randomWrites(ctx context.Context) error {
	c, err := b.r.startNode(ctx, "c", 2, false)
	if err != nil {
		return err
	}
	defer c.stop(ctx)
	if err := b.randomWritesOn(ctx, c, "a new member"); err != nil {
		return err
	}
	return b.randomWritesOn(ctx, b.a, fmt.Sprintf("node a, %d locks cached", b.a.locks.Stats().CachedLocks))
}

func (b *bench) randomWritesOn(ctx context.Context, n *node, who string) error {
	vol, cleanup, legIO, err := b.r.scratchVolume(ctx, n)
	if err != nil {
		return err
	}
	defer cleanup()
	pair, closePair, err := b.r.openRawPair("raw", demoLegSize)
	if err != nil {
		return err
	}
	defer closePair()
	raw := pair.a
	span := vol.Size()
	// All are written once over, so none pays for first allocation.
	one := make([]byte, 1<<20)
	for off := int64(0); off < span; off += int64(len(one)) {
		if err := pair.WriteAt(ctx, one, off); err != nil {
			return err
		}
		if err := vol.WriteAt(ctx, one, off); err != nil {
			return err
		}
	}
	for _, qd := range []int{1, 32} {
		var rs, ps, ms []float64
		var rc, pc, mc []float64       // CPU microseconds per write
		var ops, writes, flushes int64 // the mirror's writes and its legs' I/O
		for i := 0; i < b.o.randomRuns; i++ {
			for _, x := range []struct {
				d        blockdev.Device
				out, cpu *[]float64
			}{{raw, &rs, &rc}, {vol, &ms, &mc}, {pair, &ps, &pc}} {
				w0, f0 := legIO.writes.Load(), legIO.flushes.Load()
				v, cpu, err := randomIOPS(ctx, x.d, span, qd, b.o.dur/2)
				if err != nil {
					return err
				}
				if x.d == vol {
					// During the volume's runs: marking regions
					// counts, the write-back and clearing that follow
					// 2 s later (the peers' runs) do not.
					ops += int64(v * (b.o.dur / 2).Seconds())
					writes += legIO.writes.Load() - w0
					flushes += legIO.flushes.Load() - f0
				}
				*x.out = append(*x.out, v)
				*x.cpu = append(*x.cpu, cpu)
			}
		}
		m, r, p := percentile(ms, 0.5), percentile(rs, 0.5), percentile(ps, 0.5)
		cpu := fmt.Sprintf("process CPU per write (median): mirror %.1f us, raw leg %.1f us, 2 raw files %.1f us; mirror leg I/O per write during its runs: %.3f writes, %.4f flushes",
			percentile(mc, 0.5), percentile(rc, 0.5), percentile(pc, 0.5), float64(writes)/float64(max(ops, 1)), float64(flushes)/float64(max(ops, 1)))
		b.add(row{name: fmt.Sprintf("mirrored 4KiB random write qd%d vs raw leg", qd), unit: "IOPS", store: m, peer: r, target: 0.5,
			note: fmt.Sprintf("median of %d, in turn; peer: one raw leg file; lock manager of %s; %s", b.o.randomRuns, who, cpu)})
		b.add(row{name: fmt.Sprintf("mirrored 4KiB random write qd%d vs 2 raw files", qd), unit: "IOPS", store: m, peer: p,
			note: "peer: each write to two raw files at once, the least a 2-leg mirror does when both legs share a disk and its CPUs"})
	}
	return nil
}

// openRawPair creates two raw files of size bytes beside the legs
// (NAME0.img, NAME1.img; O_DIRECT where the legs are) as a rawPair; release
// closes and removes them.
func (r *rig) openRawPair(name string, size int64) (pair rawPair, release func(), err error) {
	var devs []blockdev.Device
	var paths []string
	release = func() {
		for i, d := range devs {
			d.Close()
			os.Remove(paths[i])
		}
	}
	for i := range 2 {
		p := filepath.Join(r.dir, fmt.Sprintf("%s%d.img", name, i))
		d, err := blockdev.OpenFile(p, blockdev.OpenOptions{Create: true, CreateSize: size, Logger: r.log})
		if err != nil {
			release()
			return rawPair{}, nil, err
		}
		devs, paths = append(devs, d), append(paths, p)
	}
	return rawPair{devs[0], devs[1]}, release, nil
}

// rawPair writes each write to both files at once, as a two-leg mirror
// does at the least (the second from a goroutine of its own).
type rawPair struct{ a, b blockdev.Device }

func (r rawPair) WriteAt(ctx context.Context, p []byte, off int64) error {
	errc := make(chan error, 1)
	go func() { errc <- r.b.WriteAt(ctx, p, off) }()
	err := r.a.WriteAt(ctx, p, off)
	if berr := <-errc; err == nil {
		err = berr
	}
	return err
}

func (r rawPair) Flush(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- r.b.Flush(ctx) }()
	err := r.a.Flush(ctx)
	if berr := <-errc; err == nil {
		err = berr
	}
	return err
}

func (r rawPair) ReadAt(ctx context.Context, p []byte, off int64) error {
	return r.a.ReadAt(ctx, p, off)
}
func (r rawPair) Size() int64    { return r.a.Size() }
func (r rawPair) BlockSize() int { return r.a.BlockSize() }
func (r rawPair) Close() error   { return errors.Join(r.a.Close(), r.b.Close()) }

// randomIOPS writes random 4 KiB blocks of d from qd workers for dur and
// returns the writes per second and the process's CPU time (user and
// system, every goroutine's, background work included) per write in
// microseconds.
func randomIOPS(ctx context.Context, d blockdev.Device, span int64, qd int, dur time.Duration) (iops, cpuPerOp float64, err error) {
	const bs = 4096
	blocks := span / bs
	var ops atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, qd)
	cpu0, err := processCPU()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for w := 0; w < qd; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			buf := make([]byte, bs)
			for i := 0; i < 10_000_000 && time.Since(start) < dur; i++ {
				blk := rng.Int64N(blocks/int64(qd))*int64(qd) + int64(w)
				buf[0] = byte(i)
				if err := d.WriteAt(ctx, buf, blk*bs); err != nil {
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
		return 0, 0, err
	}
	if err := d.Flush(ctx); err != nil {
		return 0, 0, err
	}
	elapsed := time.Since(start)
	cpu1, err := processCPU()
	if err != nil {
		return 0, 0, err
	}
	n := float64(ops.Load())
	return n / elapsed.Seconds(), float64((cpu1 - cpu0).Microseconds()) / n, nil
}

// processCPU is the CPU time (user and system) the process used so far.
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// startContentionProfile samples every event of runtime/pprof's "block"
// or "mutex" profile from now on; the returned function stops sampling and
// writes the profile to file.
func startContentionProfile(name string) func(file string) error {
	if name == "block" {
		runtime.SetBlockProfileRate(1)
	} else {
		runtime.SetMutexProfileFraction(1)
	}
	return func(file string) error {
		if name == "block" {
			defer runtime.SetBlockProfileRate(0)
		} else {
			defer runtime.SetMutexProfileFraction(0)
		}
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
}
