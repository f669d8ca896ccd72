package webnode_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store/storenode"
	"github.com/shoal-ha/shoal/web"
	"github.com/shoal-ha/shoal/web/webnode"
	"github.com/shoal-ha/shoal/web/webtest"
)

// Three nodes of one process, each with the store and the web tier as
// parts: the first to start lays the store on the shared volume and every
// node serves the same sessions; a killed node's store journal is replayed
// by a survivor, and a request retried with the same key during the
// recovery is applied once.
func TestWebPartOnThreeNodes(t *testing.T) {
	c, _, url, vars := threeNodes(t)
	resp, err := http.Get(url(2) + strings.TrimSuffix(vars, "/vars/n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"n":3`) {
		t.Fatalf("get: %d %s", resp.StatusCode, b)
	}
	// The third node dies; the others go on and see every answered add.
	c.Nodes[2].Kill()
	// Until the dead node's recovery released its locks, a request that
	// needs them is answered 503: retried with the same key, it is
	// applied once.
	wc := &webtest.Client{HTTP: &http.Client{Timeout: 20 * time.Second}, Nodes: func() []string { return []string{url(0), url(1)} },
		Backoff: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := wc.Do(ctx, "POST", vars, []byte(`{"op":"add","value":1}`), "a3")
	if err != nil || res.Status != 200 || !strings.Contains(string(res.Body), `"value":4`) {
		t.Fatalf("add after a kill: %v %d %s (%d tries)", err, res.Status, res.Body, res.Tries)
	}
	t.Logf("add after the kill answered after %d tries", res.Tries)
	resp, err = http.Get(url(0) + strings.TrimSuffix(vars, "/vars/n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"n":4`) {
		t.Fatalf("get: %s", b)
	}
}

func threeNodes(t *testing.T) (*nodetest.InProcCluster, []*webnode.Part, func(int) string, string) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	c := nodetest.NewInProcCluster(t, 3, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	parts := make([]*webnode.Part, len(c.Nodes))
	for i, nd := range c.Nodes {
		cfg := web.DefaultConfig()
		cfg.Addr = "127.0.0.1:0"
		log := testlog.New(t, nd.Name)
		sp := storenode.New(storenode.Config{Slot: *nd.Config.Volume.Slot, Format: true, Handlers: webnode.Handlers(cfg), Logger: log})
		parts[i] = webnode.New(webnode.Config{Web: cfg, Store: sp.Store, Logger: log})
		nd.Parts = []node.Part{sp, parts[i]}
		nd.Start()
	}
	c.WaitMembers(60*time.Second, 3, c.Nodes...)
	url := func(i int) string { return "http://" + parts[i].Addr().String() }
	testutil.WaitFor(t, 60*time.Second, "the web tier on every node", func() bool {
		for _, p := range parts {
			if p.Addr() == nil {
				return false
			}
		}
		return true
	})
	// A 503 (the store still busy starting) is an answer to retry with
	// the same key, as a client does.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	on := func(i int) *webtest.Client {
		return &webtest.Client{HTTP: &http.Client{Timeout: 20 * time.Second}, Nodes: func() []string { return []string{url(i)} },
			Backoff: 100 * time.Millisecond}
	}
	res, err := on(0).Do(ctx, "POST", "/api/v1/sessions", nil, "c1")
	if err != nil || res.Status != 201 {
		t.Fatalf("create: %v %d %s", err, res.Status, res.Body)
	}
	var s struct{ ID string }
	json.Unmarshal(res.Body, &s)
	vars := "/api/v1/sessions/" + s.ID + "/vars/n"
	for i := range 3 {
		if res, err := on(i).Do(ctx, "POST", vars, []byte(`{"op":"add","value":1}`), fmt.Sprintf("a%d", i)); err != nil || res.Status != 200 {
			t.Fatalf("add on node %d: %v %d %s", i, err, res.Status, res.Body)
		}
	}
	return c, parts, url, vars
}
