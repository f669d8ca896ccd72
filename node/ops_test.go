package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/dashboard"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/httpmetrics"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/node"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// scrape returns the metric names nd's /metrics exposes.
func scrape(t *testing.T, nd *nodetest.InProcNode) map[string]bool {
	t.Helper()
	resp, err := nd.AdminClient(5 * time.Second).Get(nd.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		names[name] = true
	}
	return names
}

// TestFailoverStoryAndMetrics kills a node that holds a lock and checks
// that every survivor's log tells the failover as one story under one
// recovery ID, each step with its duration and what it did, and that the
// metrics the Grafana dashboard and the alert rules in fixtures/ use all
// exist.
func TestFailoverStoryAndMetrics(t *testing.T) {
	t.Parallel()
	logs := map[string]*lockedBuffer{}
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	recs := map[string]*httpmetrics.Recorder{}
	for _, nd := range c.Nodes {
		logs[nd.Name] = &lockedBuffer{}
		nd.LogOutput = logs[nd.Name]
		recs[nd.Name] = httpmetrics.New()
		nd.Parts = []node.Part{recorderPart{recs[nd.Name]}}
		nd.Start()
	}
	for _, r := range recs {
		r.Wrap(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	c.WaitMembers(30*time.Second, 3, c.Nodes...)
	n1, n3 := c.Node("node1"), c.Node("node3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d3, err := n3.Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d3.Acquire(ctx, dlm.Named("held-by-node3"), dlm.EX); err != nil {
		t.Fatal(err)
	}
	d1, err := n1.Node().Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Killed while it still opens its volume, a node takes up to the
	// volume's start timeout to stop; the story is about a running one.
	testutil.WaitFor(t, 30*time.Second, "node3's volume open", func() bool { _, err := n3.Node().Volume(); return err == nil })
	inc := incarnation(t, n3)
	n3.Kill()
	recovered(t, n1, "node3", inc, 30*time.Second)
	// node1 gets the lock node3 held once recovery released it.
	l, err := d1.Acquire(ctx, dlm.Named("held-by-node3"), dlm.PR)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()

	id := "recovery=node3/" + inc
	for _, name := range []string{"node1", "node2"} {
		testutil.WaitFor(t, 10*time.Second, name+" telling the failover to the end", func() bool {
			return strings.Contains(logs[name].String(), "failover: done: "+id)
		})
		var story []string
		for _, line := range strings.Split(logs[name].String(), "\n") {
			if strings.Contains(line, "failover: ") && strings.Contains(line, id) {
				story = append(story, line[strings.Index(line, "failover: "):])
			}
		}
		// A survivor tells the death as its member view saw it, or as the
		// recovery record another survivor wrote first says (which of the
		// two etcd watches delivers first is not ordered).
		want := []*regexp.Regexp{
			regexp.MustCompile(`^failover: suspected: ` + id + ` how="(its lease expired|recovery requested by node[12]/\w+)"`),
			regexp.MustCompile(`^failover: fenced: ` + id + ` took=\S+ coordinator=\S+ how="lease expired plus self-fence margin"`),
			regexp.MustCompile(`^failover: lease revoked, fence recorded: ` + id + ` took=\S+`),
			regexp.MustCompile(`^failover: resynced: ` + id + ` took=\S+ coordinator=\S+ regions=\d+`),
			regexp.MustCompile(`^failover: journal replayed: ` + id + ` took=\S+ coordinator=\S+ records=0`),
			regexp.MustCompile(`^failover: locks released: ` + id + ` took=\S+ coordinator=\S+ locks=[1-9]`),
			regexp.MustCompile(`^failover: done: ` + id + ` took=\S+ since_suspected=\S+`),
		}
		if len(story) != len(want) {
			t.Fatalf("%s tells %d lines, want %d:\n%s", name, len(story), len(want), strings.Join(story, "\n"))
		}
		for i, re := range want {
			if !re.MatchString(story[i]) {
				t.Errorf("%s line %d:\n got %s\nwant %s", name, i, story[i], re)
			}
		}
	}

	have := map[string]bool{}
	for _, nd := range []*nodetest.InProcNode{n1, c.Node("node2")} {
		for k := range scrape(t, nd) {
			have[k] = true
		}
	}
	ref := regexp.MustCompile(`\b(shoal|process|go)_[a-z0-9_]+`)
	for _, f := range []string{"fixtures/grafana/shoal.json", "fixtures/prometheus/shoal-alerts.yml"} {
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ref.FindAllString(string(b), -1) {
			if !have[m] {
				t.Errorf("%s uses %s, which no node exposes", f, m)
			}
		}
	}
	for _, name := range []string{"shoal_lock_wait_seconds_bucket", "shoal_failover_duration_seconds_count", "shoal_recovery_step_duration_seconds_sum"} {
		if !have[name] {
			t.Errorf("no %s in /metrics", name)
		}
	}
	if t.Failed() {
		fmt.Println(logs["node1"].String())
	}
}

// recorderPart is a node part that only measures requests, as the web
// tier's metrics part does in shoald.
type recorderPart struct{ *httpmetrics.Recorder }

func (recorderPart) Name() string                                        { return "web-metrics" }
func (recorderPart) Start(ctx context.Context, _ node.Incarnation) error { return nil }
func (recorderPart) Stop(bool)                                           {}

// TestDashboardShowsEveryNodesTraffic: each node measures its own
// requests; node1's dashboard shows all three, the others' read from
// their /metrics over the admin API.
func TestDashboardShowsEveryNodesTraffic(t *testing.T) {
	t.Parallel()
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{NoStart: true})
	recs := map[string]*httpmetrics.Recorder{}
	for _, nd := range c.Nodes {
		recs[nd.Name] = httpmetrics.New()
		nd.Parts = []node.Part{recorderPart{recs[nd.Name]}}
		nd.Start()
	}
	c.WaitMembers(30*time.Second, 3, c.Nodes...)
	for i, nd := range c.Nodes {
		h := recs[nd.Name].Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fail" {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}))
		for j := 0; j < 10*(i+1); j++ {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		}
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/fail", nil))
	}
	n1 := c.Node("node1")
	client := n1.AdminClient(5 * time.Second)
	var snap dashboard.Snapshot
	testutil.WaitFor(t, 20*time.Second, "three nodes' traffic on node1's dashboard", func() bool {
		resp, err := client.Get(n1.AdminURL() + "/ui/snapshot.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&snap) != nil {
			return false
		}
		return len(snap.Traffic) == 3
	})
	for i, tr := range snap.Traffic {
		if tr.Node != fmt.Sprintf("node%d", i+1) {
			t.Fatalf("traffic rows %+v", snap.Traffic)
		}
	}
	// Rates need two readings of the counters: more requests on node2,
	// then its rate shows on node1's page.
	h := recs["node2"].Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	testutil.WaitFor(t, 20*time.Second, "node2's request rate on node1's dashboard", func() bool {
		for j := 0; j < 50; j++ {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		}
		resp, err := client.Get(n1.AdminURL() + "/ui/snapshot.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&snap) != nil || len(snap.Traffic) != 3 {
			return false
		}
		return snap.Traffic[1].RequestsPerSecond > 0
	})
	// Requests to the admin API itself are not web traffic.
	if _, err := client.Get(n1.AdminURL() + "/api/status"); err != nil {
		t.Fatal(err)
	}
	if req, _ := recs["node1"].Counts(); req != 11 {
		t.Fatalf("node1 counted %d requests, want 11", req)
	}
}
