package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/webtest"
)

const (
	// wholeLossPause is how long every node stays stopped: past the
	// lease TTL and the self-fence margin, so that every incarnation of
	// the cluster is dead when the nodes wake.
	wholeLossPause = testTTL + 2*time.Second
	// wholeLossBound is how long the cluster may take to come back by
	// itself once the nodes wake (new incarnations, stores open, web
	// answering, every recovery done), on a loaded test machine.
	wholeLossBound = 90 * time.Second
	// wholeLossClients add to one counter at once; each sends at most
	// wholeLossAdds adds.
	wholeLossClients = 3
	wholeLossAdds    = 2000
)

var wholeLossRounds = flag.Int("wholeloss.rounds", 1, "how many times TestWholeClusterPauseKeepsEveryAdd stops every node at once; each round after the first comes at a random moment of the comeback from the one before (a campaign: make soak runs 10)")

// TestWholeClusterPauseKeepsEveryAdd: three shoald processes with embedded
// etcd, file legs, the store and the web tier; clients add 1 to one
// session counter through the sessions API, each add under its own
// Idempotency-Key and retried with that key on the nodes until answered.
// While adds are in flight every shoald is stopped at once (SIGSTOP)
// for longer than the lease, then continued at once: every incarnation of
// the cluster is dead, the etcd members woke together, and the only
// recovery coordinators are the nodes' own new incarnations, whose store
// opens find their slots held by their own dead incarnations.
//
// It proves, with real processes: the cluster comes back by itself within
// wholeLossBound (every node a member again under a new incarnation, its
// store open, its web tier answering; a recovery of every dead incarnation
// recorded done with its steps in order, and none unfinished, in
// /api/recoveries and in shoald status); and every add counts exactly
// once: the counter read on every node equals the number of keys, and the
// values the adds answered are exactly 1..N (no add applied twice, none
// lost, none answered with another's result), the adds in flight across
// the stop included. How many journal records the replays handed over
// (a new incarnation's store open recovering its own slot, or a
// coordinator's replay step) is logged from the nodes' logs and the
// recovery records: a stop between two journal checkpoints leaves some to
// hand over, but a run is not required to.
//
// With -wholeloss.rounds N the whole cluster is stopped N times; every stop
// after the first comes 0-6 s after the nodes woke from the one before,
// often in the middle of the comeback (store opens recovering their slots,
// recoveries of the earlier incarnations running), and the bound and the
// checks apply after the last.
func TestWholeClusterPauseKeepsEveryAdd(t *testing.T) {
	parallel(t)
	wholeClusterLoss(t, nodetest.FileLegs(t), max(*wholeLossRounds, 1), "stopped", pauseAll)
}

// TestWholeClusterPauseOnReservationLegsKeepsEveryAdd is
// TestWholeClusterPauseKeepsEveryAdd on two iSCSI legs of a tgtd, with
// persistent reservations: the recoveries fence each dead incarnation by
// preempting its registration, which the new incarnations of the same
// nodes must not be cut off by.
func TestWholeClusterPauseOnReservationLegsKeepsEveryAdd(t *testing.T) {
	parallel(t)
	wholeClusterLoss(t, nodetest.ISCSILegs(t), 1, "stopped", pauseAll)
}

// pauseAll stops every node at once for wholeLossPause and continues them
// at once.
func pauseAll(c *nodetest.Cluster) {
	for _, nd := range c.Nodes {
		nd.Pause()
	}
	// The fault itself: every process stays stopped for this long.
	time.Sleep(wholeLossPause)
	for _, nd := range c.Nodes {
		nd.Cont()
	}
}

// TestWholeClusterKillKeepsEveryAdd is TestWholeClusterPauseKeepsEveryAdd
// with every shoald killed at once (SIGKILL) and started again: the etcd
// members come back from their disks with the dead incarnations' leases
// and locks in them; each node takes its name over from its dead
// incarnation (revoking that lease), so its locks are orphans at once, and
// each store open takes its own slot over its own dead incarnation's lock.
// The same bound and exactly-once checks apply.
func TestWholeClusterKillKeepsEveryAdd(t *testing.T) {
	parallel(t)
	wholeClusterLoss(t, nodetest.FileLegs(t), 1, "killed and started again", func(c *nodetest.Cluster) {
		for _, nd := range c.Nodes {
			nd.Kill()
		}
		for _, nd := range c.Nodes {
			nd.Start()
		}
	})
}

// wholeClusterLoss runs the whole-cluster loss tests on a volume over
// legs: rounds times, fault makes every node's incarnation die at once
// (what it does to the nodes is said by did).
func wholeClusterLoss(t *testing.T, legs []string, rounds int, did string, fault func(c *nodetest.Cluster)) {
	c := nodetest.NewVolumeCluster(t, legs, nodetest.Options{LeaseTTL: testTTL, Web: true})
	var urls []string
	for _, nd := range c.Nodes {
		urls = append(urls, nd.WebURL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute+time.Duration(rounds)*(wholeLossPause+6*time.Second))
	defer cancel()
	client := &webtest.Client{HTTP: &http.Client{Timeout: 5 * time.Second}, Nodes: func() []string { return urls }, Backoff: 100 * time.Millisecond}
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	res, err := client.Do(cctx, "POST", "/api/v1/sessions", nil, webtest.NewKey())
	ccancel()
	if err == nil && res.Status != http.StatusCreated {
		err = fmt.Errorf("status %d: %s", res.Status, res.Body)
	}
	var created struct{ ID string }
	if err == nil {
		err = json.Unmarshal(res.Body, &created)
	}
	if err != nil || created.ID == "" {
		t.Fatalf("creating a session: %v", err)
	}
	id := created.ID
	sessionPath := "/api/v1/sessions/" + id
	for _, nd := range c.Nodes {
		c.WaitFor(60*time.Second, nd.Name+"'s web tier to read the session", func() bool { return sessionOn(nd, sessionPath) == nil })
	}

	adds := &addLog{}
	stop := make(chan struct{})
	errs := make(chan error, wholeLossClients)
	run := webtest.NewKey()[:8]
	for i := range wholeLossClients {
		go func() {
			errs <- addUntil(ctx, client, sessionPath+"/vars/n", fmt.Sprintf("%s-c%d", run, i), stop, adds)
		}()
	}
	c.WaitFor(30*time.Second, "every client's first adds answered", func() bool { return adds.count() >= 2*wholeLossClients })

	// dead lists, by node, the incarnations the stops killed.
	dead := map[string][]string{}
	var stops []window
	var contAt time.Time
	for round := range rounds {
		for _, nd := range c.Nodes {
			m, err := nd.Members()
			if round == 0 && (err != nil || m[nd.Name] == "") {
				t.Fatalf("%s's incarnation: %v %v", nd.Name, m, err)
			}
			// Later rounds may stop a node between incarnations, or
			// before its admin API answers: nothing to note then.
			if inc := m[nd.Name]; err == nil && inc != "" && !slices.Contains(dead[nd.Name], inc) {
				dead[nd.Name] = append(dead[nd.Name], inc)
			}
		}
		pausedAt := time.Now()
		fault(c)
		contAt = time.Now()
		stops = append(stops, window{pausedAt, contAt})
		t.Logf("round %d: every node %s in %s with %d adds answered", round+1, did, contAt.Sub(pausedAt).Round(time.Millisecond), adds.count())
		if round < rounds-1 {
			// The next stop at a random moment of the comeback.
			time.Sleep(time.Duration(mrand.Int64N(int64(6 * time.Second))))
		}
	}

	var why error
	deadline := contAt.Add(wholeLossBound)
	for {
		if why = clusterBack(c, dead, sessionPath); why == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not come back within %s of the nodes waking: %v", wholeLossBound, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("cluster back %s after the last fault ended", time.Since(contAt).Round(time.Millisecond))

	// A few more adds on the cluster that came back, then the clients stop.
	atBack := adds.count()
	c.WaitFor(60*time.Second, "adds answered after the cluster came back", func() bool { return adds.count() >= atBack+wholeLossClients })
	close(stop)
	for range wholeLossClients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	values, spanning := adds.result(stops)
	n := len(values)
	for i, v := range values {
		if v != int64(i+1) {
			t.Fatalf("the %d adds answered values %v, want 1..%d each once", n, values, n)
		}
	}
	if spanning == 0 {
		t.Fatalf("no add was in flight across a fault (%d adds)", n)
	}
	for _, nd := range c.Nodes {
		body, err := readSession(ctx, nd, sessionPath)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(body.Vars["n"]); got != strconv.Itoa(n) {
			t.Fatalf("%s reads n = %s, want %d (one per key)", nd.Name, got, n)
		}
	}
	recs, err := recoveries(c.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	for name, incs := range dead {
		for _, old := range incs {
			rec, _ := recoveryIn(recs, name, old)
			checkStepsInOrder(t, rec)
		}
	}
	out, err := runShoald(t, append([]string{"status", "--admin", c.Nodes[0].AdminAddr}, c.AdminArgs()...)...)
	if err != nil || !strings.Contains(out, "recoveries: none in progress") {
		t.Fatalf("shoald status: %v\n%s", err, out)
	}
	t.Logf("%d adds, each counted once; %d in flight across a fault; replays: %s", n, spanning, handedOver(t, c, dead))
}

// addLog records the adds answered: the value each answered and when it
// was sent and answered.
type addLog struct {
	mu   sync.Mutex
	adds []answeredAdd
}

type answeredAdd struct {
	value      int64
	sent, done time.Time
}

func (l *addLog) add(a answeredAdd) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.adds = append(l.adds, a)
}

func (l *addLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.adds)
}

// window is one stop of every node: from SIGSTOP to SIGCONT.
type window struct{ stopped, continued time.Time }

// result returns the answered values in order and how many adds were
// outstanding when a stop ended: sent before the nodes came back (before
// the stop, or to a node already stopped) and answered after. An add sent
// just before a kill is often answered by a node the kill has not reached
// yet; asking for one sent before the stop began made the kill test fail
// now and then with every add fine.
func (l *addLog) result(stops []window) (values []int64, spanning int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.adds {
		values = append(values, a.value)
		for _, w := range stops {
			if a.sent.Before(w.continued) && a.done.After(w.continued) {
				spanning++
				break
			}
		}
	}
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	return values, spanning
}

// addUntil adds 1 to the variable at path under fresh keys (prefix-N)
// until stop is closed, at most wholeLossAdds times; each add is retried
// with its key until a node answers it.
func addUntil(ctx context.Context, client *webtest.Client, path, prefix string, stop <-chan struct{}, log *addLog) error {
	for j := range wholeLossAdds {
		select {
		case <-stop:
			return nil
		default:
		}
		sent := time.Now()
		res, err := client.Do(ctx, "POST", path, []byte(`{"op":"add","value":1}`), fmt.Sprintf("%s-%d", prefix, j))
		if err == nil && res.Status != http.StatusOK {
			err = fmt.Errorf("status %d: %s", res.Status, res.Body)
		}
		if err != nil {
			return fmt.Errorf("add %s-%d: %w", prefix, j, err)
		}
		var v struct{ Value json.RawMessage }
		if err := json.Unmarshal(res.Body, &v); err != nil {
			return fmt.Errorf("add %s-%d answered %s: %w", prefix, j, res.Body, err)
		}
		n, err := strconv.ParseInt(string(v.Value), 10, 64)
		if err != nil {
			return fmt.Errorf("add %s-%d answered %s: %w", prefix, j, res.Body, err)
		}
		log.add(answeredAdd{value: n, sent: sent, done: time.Now()})
	}
	return nil
}

// sessionOn asks nd alone for the session at path.
func sessionOn(nd *nodetest.Node, path string) error {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(nd.WebURL() + path)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: GET %s: %s", nd.Name, path, resp.Status)
	}
	return nil
}

// readSession reads the session at path from nd alone, retrying while it
// answers 503.
func readSession(ctx context.Context, nd *nodetest.Node, path string) (web.SessionView, error) {
	var v web.SessionView
	wc := &webtest.Client{HTTP: &http.Client{Timeout: 5 * time.Second}, Nodes: func() []string { return []string{nd.WebURL()} }}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := wc.Do(ctx, "GET", path, nil, "")
	if err == nil && res.Status != http.StatusOK {
		err = fmt.Errorf("status %d: %s", res.Status, res.Body)
	}
	if err == nil {
		err = json.Unmarshal(res.Body, &v)
	}
	if err != nil {
		return v, fmt.Errorf("%s: GET %s: %w", nd.Name, path, err)
	}
	return v, nil
}

// clusterBack says what keeps the cluster from being back after every
// incarnation in dead (name -> incarnations) died: each node a member
// under a new incarnation seeing all three, its store open, its web tier
// reading the session at path; a recovery of every dead incarnation
// recorded done, and none unfinished.
func clusterBack(c *nodetest.Cluster, dead map[string][]string, path string) error {
	for _, nd := range c.Nodes {
		m, err := nd.Members()
		if err != nil {
			return fmt.Errorf("%s: members: %w", nd.Name, err)
		}
		if len(m) != len(c.Nodes) {
			return fmt.Errorf("%s sees members %v", nd.Name, m)
		}
		for name, incs := range dead {
			if m[name] == "" || slices.Contains(incs, m[name]) {
				return fmt.Errorf("%s sees %s as incarnation %q (dead ones %v)", nd.Name, name, m[name], incs)
			}
		}
		if !nd.StoreOpen() {
			return fmt.Errorf("%s: store not open", nd.Name)
		}
		if err := sessionOn(nd, path); err != nil {
			return err
		}
	}
	recs, err := recoveries(c.Nodes[0])
	if err != nil {
		return err
	}
	if busy := recovery.InProgress(recs); len(busy) > 0 {
		var s []string
		for _, r := range busy {
			s = append(s, fmt.Sprintf("%s at %s (%s)", r.Victim, r.Next(), r.LastError))
		}
		return fmt.Errorf("recoveries unfinished: %s", strings.Join(s, "; "))
	}
	for name, incs := range dead {
		for _, old := range incs {
			if _, ok := recoveryIn(recs, name, old); !ok {
				return fmt.Errorf("no recovery of %s/%s recorded", name, old)
			}
		}
	}
	return nil
}

func recoveries(nd *nodetest.Node) ([]recovery.Record, error) {
	resp, err := nd.AdminClient(5 * time.Second).Get(nd.AdminURL() + "/api/recoveries")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: /api/recoveries: %s", nd.Name, resp.Status)
	}
	var recs []recovery.Record
	if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
		return nil, errors.Join(fmt.Errorf("%s: /api/recoveries", nd.Name), err)
	}
	return recs, nil
}

func recoveryIn(recs []recovery.Record, name, incarnation string) (recovery.Record, bool) {
	for _, r := range recs {
		if r.Victim.Name == name && r.Victim.Incarnation == incarnation {
			return r, true
		}
	}
	return recovery.Record{}, false
}

var replayedLine = regexp.MustCompile(`(replayed this slot's journal left by an earlier incarnation|replayed a dead incarnation's journal).*\brecords=(\d+)`)

// handedOver sums up what the replays of the dead incarnations handed
// over: the records named in the nodes' log lines of the store's replays
// (an open recovering its own slot, a coordinator's replay), and the
// replay steps' outcomes in the recovery records.
func handedOver(t *testing.T, c *nodetest.Cluster, dead map[string][]string) string {
	t.Helper()
	var opens, coords, openRecs, coordRecs int
	for _, nd := range c.Nodes {
		for _, m := range replayedLine.FindAllStringSubmatch(nd.Log(), -1) {
			n, _ := strconv.Atoi(m[2])
			if strings.HasPrefix(m[1], "replayed this slot") {
				opens++
				openRecs += n
			} else {
				coords++
				coordRecs += n
			}
		}
	}
	recs, err := recoveries(c.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for name, incs := range dead {
		for _, old := range incs {
			r, _ := recoveryIn(recs, name, old)
			for _, h := range r.History {
				if h.Step == recovery.StepReplayJournal {
					steps = append(steps, fmt.Sprintf("%s/%s by %s: %d %s", name, old, h.Coordinator, h.Outcome.Count, h.Outcome.Unit))
				}
			}
		}
	}
	sort.Strings(steps)
	return fmt.Sprintf("%d own-slot replays at open handed over %d records, %d coordinator replays %d records; replay steps: %s",
		opens, openRecs, coords, coordRecs, strings.Join(steps, ", "))
}
