package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-ha/shoal/internal/browsertest"
)

var counterRun = flag.Bool("benchweb.counter", false, "run the demo's counter page in headless chromium on the demo's cluster while its node is killed (needs bin/shoald, the demo's fixed addresses free, about a minute)")

// The demo's counter page, in headless chromium with its own retrying
// client, counts on while the node it talks to is SIGKILLed with clicks in
// flight: every click it saw acknowledged is in the stored count, once.
func TestCounterPageCountsThroughAKill(t *testing.T) {
	if !*counterRun {
		t.Skip("runs the demo cluster on its fixed addresses; go test ./tools/benchweb -run Counter -args -benchweb.counter")
	}
	for _, a := range []string{"127.0.0.1:8080", "127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.1:2379"} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Skipf("the demo's address %s is taken (a demo runs?): %v", a, err)
		}
		l.Close()
	}
	top, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(top, "bin")
	if _, err := os.Stat(filepath.Join(bin, "shoald")); err != nil {
		t.Skipf("needs bin/shoald (make build): %v", err)
	}
	dir, err := os.MkdirTemp("", "benchweb-counter")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the cluster's logs are kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	d := &demoCluster{top: top, dir: dir, bin: bin}
	if err := d.script("start", "--detach"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.script("stop") })
	for n := 1; n <= 3; n++ {
		if err := d.waitWeb(n, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// As a person would, after the site was loaded (the load's long
	// transactions hold the store's locks meanwhile).
	if err := d.waitSeeded(180 * time.Second); err != nil {
		t.Fatal(err)
	}
	b := browsertest.Start(t)
	page := func(what, cond string, within time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.Ctx, within+time.Second)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(within))); err != nil {
			text, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("the page did not show %s within %v: %v\n%s", what, within, err, text)
		}
	}
	number := func(id string) int {
		t.Helper()
		n, err := chromedp.Run(b.Ctx, chromedp.Evaluate[int](fmt.Sprintf(`Number(document.getElementById(%q).textContent)`, id)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The site is loaded into the store in the background of the first
	// start: the page may take a few seconds to be there.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := chromedp.Do(b.Ctx, chromedp.Navigate(d.url(1)+"/counter.html")); err != nil {
			t.Fatal(err)
		}
		ok, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[bool](`document.getElementById("auto") !== null`))
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the counter page was not served within 60 s")
		}
		time.Sleep(time.Second)
	}
	page("a session", `document.getElementById("stored").textContent === "0"`, 30*time.Second)
	if err := chromedp.Do(b.Ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("auto").click()`)); err != nil {
		t.Fatal(err)
	}
	page("ten clicks acknowledged", `Number(document.getElementById("acked").textContent) >= 10`, 30*time.Second)
	// The page talks to node1, which served it: kill it while it counts.
	pid, err := d.pid(1)
	if err != nil {
		t.Fatal(err)
	}
	before := number("acked")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	page("ten more clicks acknowledged after the kill", fmt.Sprintf(`Number(document.getElementById("acked").textContent) >= %d`, before+10), 90*time.Second)
	if err := chromedp.Do(b.Ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("auto").click()`)); err != nil {
		t.Fatal(err)
	}
	// Stopping refreshes the stored count from a node; the page compares.
	page("the stored count equal to the acknowledged clicks", `document.getElementById("verdict").textContent === "equal" && document.getElementById("stored").textContent === document.getElementById("acked").textContent`, 30*time.Second)
	acked, stored := number("acked"), number("stored")
	log, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.getElementById("log").textContent`))
	t.Logf("acknowledged %d (%d before the kill), stored %d; the page's log:\n%s", acked, before, stored, log)
	if acked != stored {
		t.Fatalf("acknowledged %d, stored %d", acked, stored)
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Logf("console errors (failed fetches to the killed node are expected): %q", errs)
	}
}
