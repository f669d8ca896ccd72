// Command benchdlm runs Shoal's lock manager and etcd's concurrency.Mutex
// side by side on the same three-member embedded etcd cluster and prints
// ops/s, p50/p99 latency and the ratio for each case:
//
//	uncontended   one locker, acquire+release of one resource (no caching)
//	cached        one locker re-acquiring a lock its node keeps cached
//	ping-pong     two nodes taking turns on one resource, the next one
//	              always queued before the holder releases
//	strict turns  two nodes taking turns without overlap (no waiter queued)
//	64-distinct   64 lockers on distinct resources (cached, and uncached)
//
// Usage: benchdlm [-dur 3s] [-ops N] [-ttl 5s] [-out file]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/etcdtest"
)

const prefix = "/bench"

type result struct {
	name, impl string
	ops        int
	elapsed    time.Duration
	lat        []time.Duration
}

func (r result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
}

// options shape one benchmark run.
type options struct {
	// dur is the length of each case.
	dur time.Duration
	// maxOps caps the ops of each worker in each case (the smoke test keeps
	// a case to a handful of ops; a measurement runs for dur).
	maxOps int
	// ttl is the lease TTL of every lock-manager member and etcd session,
	// whole seconds.
	ttl time.Duration
}

// defaultMaxOps is no cap in practice: dur ends every case first.
const defaultMaxOps = 50_000_000

// caseEnd is when the running case stops (read by ops that wait).
var caseEnd atomic.Int64

func end(time.Duration) time.Time { return time.Unix(0, caseEnd.Load()) }

// run calls op from workers goroutines until dur passes (or maxOps per
// worker), timing each call.
func run(name, impl string, workers int, o options, op func(w int) error) (result, error) {
	dur := o.dur
	var mu sync.Mutex
	res := result{name: name, impl: impl}
	var firstErr error
	start := time.Now()
	end := start.Add(dur)
	caseEnd.Store(end.UnixNano())
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			ops := 0
			// Every op counts; fast ops are timed one in eight, so that
			// reading the clock does not dominate what is measured.
			for i := 0; i < o.maxOps && (i%64 != 0 || time.Now().Before(end)); i++ {
				timed := i%8 == 0 || len(lat) < 1000
				var t0 time.Time
				if timed {
					t0 = time.Now()
				}
				if err := op(w); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s/%s: %w", name, impl, err)
					}
					mu.Unlock()
					return
				}
				ops++
				if timed {
					lat = append(lat, time.Since(t0))
				}
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.ops += ops
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res, firstErr
}

// runPingPong makes two workers take strict turns: each op starts when
// the other worker has finished its own, so every op hands the lock over.
func runPingPong(name, impl string, o options, op func(w int) error) (result, error) {
	dur := o.dur
	res := result{name: name, impl: impl}
	batons := [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	done := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	end := start.Add(dur)
	var wg sync.WaitGroup
	batons[0] <- struct{}{}
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < o.maxOps; i++ {
				select {
				case <-batons[w]:
				case <-done:
					return
				}
				t0 := time.Now()
				err := op(w)
				d := time.Since(t0)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("%s/%s: %w", name, impl, err)
				}
				res.lat = append(res.lat, d)
				res.ops++
				mu.Unlock()
				if err != nil || time.Now().After(end) || i == o.maxOps-1 {
					once.Do(func() { close(done) })
					return
				}
				batons[1-w] <- struct{}{}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res, firstErr
}

type node struct {
	m *dlm.LeaseMember
	n *dlm.Node
}

func startNode(ctx context.Context, cli *clientv3.Client, name string, cache bool, ttl time.Duration) (*node, error) {
	m, err := dlm.JoinAsClient(ctx, dlm.LeaseMemberConfig{Client: cli, Prefix: prefix, Name: name, TTL: ttl, Margin: time.Second, ElectionTimeout: 500 * time.Millisecond}) // etcdtest's election timeout
	if err != nil {
		return nil, err
	}
	cfg := dlm.DefaultConfig()
	cfg.Client, cfg.Member, cfg.Prefix, cfg.CacheLocks = cli, m, prefix, cache
	n, err := dlm.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &node{m, n}, nil
}

func lockRelease(n *dlm.Node, res dlm.Resource) error {
	l, err := n.Acquire(context.Background(), res, dlm.EX)
	if err != nil {
		return err
	}
	if err := l.Use(); err != nil {
		return err
	}
	return l.Release()
}

func mutexCycle(m *concurrency.Mutex) error {
	if err := m.Lock(context.Background()); err != nil {
		return err
	}
	return m.Unlock(context.Background())
}

func main() {
	out := flag.String("out", "", "also write the table to this file")
	dur := flag.Duration("dur", 3*time.Second, "duration of each case")
	ops := flag.Int("ops", defaultMaxOps, "at most this many ops per worker in each case")
	ttl := flag.Duration("ttl", 5*time.Second, "lease TTL of the lock-manager members and etcd sessions (whole seconds)")
	flag.Parse()
	if *ops < 1 || *ttl < time.Second || *ttl%time.Second != 0 {
		fmt.Fprintln(os.Stderr, "benchdlm: -ops must be at least 1 and -ttl a whole number of seconds")
		os.Exit(2)
	}
	if err := bench(options{dur: *dur, maxOps: *ops, ttl: *ttl}, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchdlm:", err)
		os.Exit(1)
	}
}

func bench(o options, out string) error {
	dur := o.dur
	dir, err := os.MkdirTemp("", "benchdlm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := etcdtest.Start(dir, 3, etcdtest.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := context.Background()
	clis := make([]*clientv3.Client, 3)
	for i := range clis {
		clis[i], err = c.NewClientTo([]string{c.Endpoints[i]})
		if err != nil {
			return err
		}
		defer clis[i].Close()
	}
	var nodes, plain []*node
	for i := range 3 {
		nd, err := startNode(ctx, clis[i], fmt.Sprintf("cached%d", i), true, o.ttl)
		if err != nil {
			return err
		}
		nodes = append(nodes, nd)
		nu, err := startNode(ctx, clis[i], fmt.Sprintf("uncached%d", i), false, o.ttl)
		if err != nil {
			return err
		}
		plain = append(plain, nu)
	}
	defer func() {
		// The nodes are independent: closing them together takes one
		// close's time.
		var wg sync.WaitGroup
		for _, nd := range append(nodes, plain...) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = nd.n.Close(ctx)
				_ = nd.m.Leave(ctx)
			}()
		}
		wg.Wait()
	}()
	sessions := make([]*concurrency.Session, 3)
	for i := range sessions {
		sessions[i], err = concurrency.NewSession(clis[i], concurrency.WithTTL(int(o.ttl/time.Second)))
		if err != nil {
			return err
		}
		defer sessions[i].Close()
	}

	var results [][2]result
	pair := func(name string, d, e func() (result, error)) error {
		fmt.Fprintf(os.Stderr, "running %s...\n", name)
		rd, err := d()
		if err != nil {
			return err
		}
		re, err := e()
		if err != nil {
			return err
		}
		results = append(results, [2]result{rd, re})
		return nil
	}
	etcdOne := func(name string) func() (result, error) {
		return func() (result, error) {
			m := concurrency.NewMutex(sessions[0], prefix+"/mutex/"+strings.Fields(name)[0])
			return run(name, "etcd Mutex", 1, o, func(int) error { return mutexCycle(m) })
		}
	}
	if err := pair("uncontended", func() (result, error) {
		return run("uncontended", "shoal DLM", 1, o, func(int) error { return lockRelease(plain[0].n, dlm.Named("uncontended")) })
	}, etcdOne("uncontended")); err != nil {
		return err
	}
	if err := pair("cached re-acquire", func() (result, error) {
		if err := lockRelease(nodes[0].n, dlm.Named("cached")); err != nil {
			return result{}, err
		}
		return run("cached re-acquire", "shoal DLM", 1, o, func(int) error { return lockRelease(nodes[0].n, dlm.Named("cached")) })
	}, etcdOne("cached re-acquire")); err != nil {
		return err
	}
	// Ping-pong: two nodes take the lock in turn, each holding it until
	// the other node's request is queued, so every op is a hand-over to a
	// waiting node. A DLM holder learns of the waiter from its blocking
	// callback (Lock.Blocking); an etcd Mutex holder polls the mutex's
	// waiter keys every millisecond.
	if err := pair("2-node ping-pong", func() (result, error) {
		return run("2-node ping-pong", "shoal DLM", 2, o, func(w int) error {
			l, err := nodes[w].n.Acquire(context.Background(), dlm.Named("pingpong"), dlm.EX)
			if err != nil {
				return err
			}
			if err := l.Use(); err != nil {
				return err
			}
			select {
			case <-l.Blocking():
			case <-time.After(time.Until(end(dur))):
			}
			return l.Release()
		})
	}, func() (result, error) {
		ms := []*concurrency.Mutex{concurrency.NewMutex(sessions[0], prefix+"/mutex/pingpong"), concurrency.NewMutex(sessions[1], prefix+"/mutex/pingpong")}
		return run("2-node ping-pong", "etcd Mutex", 2, o, func(w int) error {
			if err := ms[w].Lock(context.Background()); err != nil {
				return err
			}
			for i := 0; i < 100_000 && time.Now().Before(end(dur)); i++ {
				resp, err := clis[w].Get(context.Background(), prefix+"/mutex/pingpong/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				if err != nil {
					return err
				}
				if resp.Count >= 2 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			return ms[w].Unlock(context.Background())
		})
	}); err != nil {
		return err
	}
	if err := pair("2-node strict turns", func() (result, error) {
		return runPingPong("2-node strict turns", "shoal DLM", o, func(w int) error { return lockRelease(nodes[w].n, dlm.Named("turns")) })
	}, func() (result, error) {
		ms := []*concurrency.Mutex{concurrency.NewMutex(sessions[0], prefix+"/mutex/turns"), concurrency.NewMutex(sessions[1], prefix+"/mutex/turns")}
		return runPingPong("2-node strict turns", "etcd Mutex", o, func(w int) error { return mutexCycle(ms[w]) })
	}); err != nil {
		return err
	}
	etcd64 := func(name string) func() (result, error) {
		return func() (result, error) {
			ms := make([]*concurrency.Mutex, 64)
			for i := range ms {
				ms[i] = concurrency.NewMutex(sessions[i%3], fmt.Sprintf("%s/mutex/%s/%d", prefix, strings.ReplaceAll(name, " ", "-"), i))
			}
			return run(name, "etcd Mutex", 64, o, func(w int) error { return mutexCycle(ms[w]) })
		}
	}
	if err := pair("64 distinct (cached)", func() (result, error) {
		return run("64 distinct (cached)", "shoal DLM", 64, o, func(w int) error {
			return lockRelease(nodes[w%3].n, dlm.Named(fmt.Sprintf("distinct-%d", w)))
		})
	}, etcd64("64 distinct (cached)")); err != nil {
		return err
	}
	if err := pair("64 distinct (no caching)", func() (result, error) {
		return run("64 distinct (no caching)", "shoal DLM", 64, o, func(w int) error {
			return lockRelease(plain[w%3].n, dlm.Named(fmt.Sprintf("distinct-u-%d", w)))
		})
	}, etcd64("64 distinct (no caching)")); err != nil {
		return err
	}
	for _, nd := range append(nodes, plain...) {
		if err := nd.n.Check(); err != nil {
			return fmt.Errorf("lock table check after the benchmark: %w", err)
		}
	}

	var b strings.Builder
	limit := ""
	if o.maxOps < defaultMaxOps {
		limit = fmt.Sprintf(" (at most %d ops per worker)", o.maxOps)
	}
	fmt.Fprintf(&b, "DLM vs etcd concurrency.Mutex, 3-member embedded etcd on loopback, %v per case%s\n\n", dur, limit)
	fmt.Fprintf(&b, "%-28s %-11s %12s %10s %10s %9s\n", "case", "impl", "ops/s", "p50", "p99", "ratio")
	for _, p := range results {
		for i, r := range p {
			ratio := ""
			if i == 0 && p[1].rate() > 0 {
				ratio = fmt.Sprintf("%.1fx", r.rate()/p[1].rate())
			}
			fmt.Fprintf(&b, "%-28s %-11s %12.0f %10s %10s %9s\n", r.name, r.impl, r.rate(), fmtDur(r.pct(0.5)), fmtDur(r.pct(0.99)), ratio)
		}
	}
	b.WriteString("\nratio = shoal DLM ops/s / etcd Mutex ops/s for the same case. One op = acquire+release.\n" +
		"The etcd Mutex has no lock caching, so its cached row repeats the uncontended cycle.\n" +
		"In ping-pong every op hands the lock to the other node, which is already queued for it;\n" +
		"latency there is from asking to getting the lock, including the other node's turn.\n")
	var w io.Writer = os.Stdout
	fmt.Fprint(w, b.String())
	if out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d.Nanoseconds())/1e3)
	default:
		return fmt.Sprintf("%.2fms", float64(d.Nanoseconds())/1e6)
	}
}
