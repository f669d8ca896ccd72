package dashboard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/shoal-ha/shoal/fencing/recovery"
	"github.com/shoal-ha/shoal/internal/browsertest"
)

// waitPage polls a JavaScript condition in the page for up to d.
func waitPage(t *testing.T, b *browsertest.Browser, what, cond string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, d+time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		html, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
		t.Fatalf("page did not show %s within %s: %v\npage text:\n%s", what, d, err, html)
	}
}

func nodeState(name, state string) string {
	return fmt.Sprintf(`(document.querySelector('[data-node=%q]') || {dataset: {}}).dataset.state === %q`, name, state)
}

func stepState(step, state string) string {
	return fmt.Sprintf(`(document.querySelector('[data-step=%q]') || {dataset: {}}).dataset.state === %q`, step, state)
}

// TestPageFollowsAFailover drives the page in headless chromium through a
// scripted failover: three nodes, one killed, each recovery step, its
// return. Every change arrives over the event stream; the page never
// reloads. The screenshots show each state.
func TestPageFollowsAFailover(t *testing.T) {
	st := newStory(time.Now().UTC().Add(-10 * time.Minute))
	ui, ts := newTestServer(t, st)
	// Ten minutes of history before the page opens.
	for i := 0; i < 60; i++ {
		ui.Sample(context.Background())
		st.advance(10 * time.Second)
	}
	b := browsertest.Start(t)
	if err := chromedp.Do(b.Ctx, chromedp.Navigate(ts.URL+"/ui/")); err != nil {
		t.Fatal(err)
	}
	waitPage(t, b, "three nodes up", `document.querySelectorAll('[data-node][data-state="up"]').length === 3`, 5*time.Second)
	waitPage(t, b, "a live stream", `document.getElementById("conn").dataset.conn === "live"`, 5*time.Second)
	// Marks the document: a reload would lose it.
	if err := chromedp.Do(b.Ctx, chromedp.Evaluate[chromedp.Void](`window.loadedOnce = true`)); err != nil {
		t.Fatal(err)
	}
	b.Screenshot("three-nodes-up")

	st.advance(2 * time.Second)
	st.kill("node2")
	ui.Sample(context.Background())
	waitPage(t, b, "node2 down", nodeState("node2", StateDown), 5*time.Second)
	b.Screenshot("node2-down")

	v := st.request("node2")
	st.advance(500 * time.Millisecond)
	ui.Sample(context.Background())
	waitPage(t, b, "node2 being fenced", nodeState("node2", StateRecovering)+" && "+stepState("fence", StepRunning), 5*time.Second)
	b.Screenshot("fencing")
	for _, step := range recovery.Steps() {
		st.advance(250 * time.Millisecond)
		st.finish(v)
		ui.Sample(context.Background())
		waitPage(t, b, "step "+step.String()+" done", stepState(step.String(), StepFinished), 5*time.Second)
		b.Screenshot("step-" + step.String() + "-done")
	}
	waitPage(t, b, "node2 recovered", nodeState("node2", StateRecovered), 5*time.Second)

	st.advance(3 * time.Second)
	st.rejoin("node2", "node2-b")
	ui.Sample(context.Background())
	waitPage(t, b, "node2 back", nodeState("node2", StateUp)+` && document.querySelectorAll('[data-node][data-state="up"]').length === 3`, 5*time.Second)
	waitPage(t, b, "the same document", `window.loadedOnce === true`, time.Second)
	b.Screenshot("node2-back")

	if errs := b.Errors(); len(errs) > 0 {
		t.Fatalf("console errors: %q", errs)
	}
}
