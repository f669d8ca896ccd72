package dashboard_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/adminauth"
	"github.com/shoal-ha/shoal/internal/browsertest"
	"github.com/shoal-ha/shoal/internal/nodetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nodetest.Cleanup()
	os.Exit(code)
}

// waitPage polls a JavaScript condition in the page for up to d and
// returns how long it took.
func waitPage(t *testing.T, b *browsertest.Browser, what, cond string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.Ctx, d+time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		text, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
		t.Fatalf("page did not show %s within %s: %v\npage text:\n%s", what, d, err, text)
	}
	return time.Since(start)
}

// TestDashboardFollowsARealFailover runs three shoald processes on one
// mirrored volume, opens node1's dashboard in headless chromium, kills
// node3 while it writes, and follows the page: node3 down within its
// lease TTL and a few seconds, each recovery step as it is recorded, node3
// back as a new incarnation. The page never reloads; a screenshot of each
// state goes to the artefact folder.
func TestDashboardFollowsARealFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three shoald processes and a browser")
	}
	// The nodes keep their leases through the CPU stalls of a full test
	// run on a small machine (a 2s lease was lost to keep-alives 1.5s
	// late); on an idle machine the killed node is seen down within the
	// lease and a second.
	const ttl = 4 * time.Second
	c := nodetest.NewVolumeCluster(t, nodetest.FileLegs(t), nodetest.Options{LeaseTTL: ttl})
	n1, n3 := c.Node("node1"), c.Node("node3")
	// The admin API is HTTPS with the cluster's CA: the browser trusts
	// node1's key, and logs in with the admin token node1 printed and kept
	// in its data directory.
	b := browsertest.Start(t, browsertest.TrustKey(t, filepath.Join(n1.DataDir, "certs", "node1.pem")))
	token, err := os.ReadFile(filepath.Join(n1.DataDir, adminauth.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b.Ctx, chromedp.Navigate(n1.AdminURL()+"/ui/?token="+strings.TrimSpace(string(token)))); err != nil {
		t.Fatal(err)
	}
	if u, err := chromedp.Run(b.Ctx, chromedp.Location()); err != nil || strings.Contains(u, "token") {
		t.Fatalf("after the login the address is %q (%v): the token must leave it", u, err)
	}
	waitPage(t, b, "three nodes up", `document.querySelectorAll('[data-node][data-state="up"]').length === 3`, 10*time.Second)
	waitPage(t, b, "the volume's legs", `document.querySelectorAll('[data-leg]').length === 2`, 10*time.Second)
	if err := chromedp.Do(b.Ctx, chromedp.Evaluate[chromedp.Void](`window.loadedOnce = true`)); err != nil {
		t.Fatal(err)
	}
	b.Screenshot("three-nodes-up")

	// node3 writes through the volume under region locks until it dies:
	// its locks and dirty regions are what recovery has to deal with.
	st3, err := n3.Status()
	if err != nil {
		t.Fatal(err)
	}
	oldInc := st3.Incarnation
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		body := []byte(`{"offset": 0, "length": 65536, "pattern": 7, "repeat": 2000, "interval_ms": 5}`)
		resp, err := n3.AdminClient(30*time.Second).Post(n3.AdminURL()+"/api/volume/write", "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitPage(t, b, "node3 holding a lock", `Number((document.querySelector('[data-mode="EX"]') || {}).textContent) > 0`, 10*time.Second)

	n3.Kill()
	<-writing
	took := waitPage(t, b, "node3 down",
		`["down", "recovering", "recovered"].includes((document.querySelector('[data-node="node3"]') || {dataset: {}}).dataset.state)`, ttl+6*time.Second)
	t.Logf("the page showed node3 down %s after the kill", took.Round(time.Millisecond))
	b.Screenshot("node3-down")

	rec := fmt.Sprintf(`[data-recovery="node3/%s"]`, oldInc)
	for _, step := range recovery.Steps() {
		waitPage(t, b, "step "+step.String()+" done",
			fmt.Sprintf(`(document.querySelector('%s [data-step=%q]') || {dataset: {}}).dataset.state === "done"`, rec, step.String()), 15*time.Second)
		b.Screenshot("step-" + step.String() + "-done")
	}

	n3.Start()
	waitPage(t, b, "node3 back as a new incarnation",
		`(document.querySelector('[data-node="node3"]') || {dataset: {}}).dataset.state === "up" && document.querySelectorAll('[data-node][data-state="up"]').length === 3`, 30*time.Second)
	waitPage(t, b, "the same document, never reloaded", `window.loadedOnce === true`, time.Second)
	b.Screenshot("node3-back")

	if errs := b.Errors(); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}
