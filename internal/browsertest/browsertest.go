// Package browsertest drives Debian's chromium headless through
// github.com/chromedp/chromedp for tests of pages the nodes serve. Start
// launches one browser with a fresh profile and no background traffic,
// collects every console error and uncaught exception, and ends the
// browser when the test ends. Screenshot writes PNGs to the test's
// artefact folder, whose path the test log prints.
package browsertest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// Browser is one headless chromium and its first tab.
type Browser struct {
	// Ctx runs chromedp actions in the tab.
	Ctx context.Context
	t   testing.TB
	dir string

	mu     sync.Mutex
	errors []string
	shots  int
}

// Path finds the chromium binary: $SHOAL_CHROMIUM, then chromium on PATH.
func Path() (string, error) {
	if p := os.Getenv("SHOAL_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("browsertest: chromium not found: fixtures/setup.sh installs Debian's chromium package")
}

// Start launches chromium headless for t; it is ended (by chromedp, which
// started it) when the test ends. extra adds flags (TrustKey).
func Start(t testing.TB, extra ...chromedp.ExecAllocatorOption) *Browser {
	t.Helper()
	path, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		// Chromium keeps its singleton socket in a directory of its
		// own under TMPDIR and leaves it behind: a directory of the
		// test's, removed at its end, takes it.
		chromedp.Env("TMPDIR=" + t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	}
	opts = append(opts, extra...)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &Browser{Ctx: ctx, t: t}
	// Console starts the browser and subscribes before any page loads,
	// so that no message is lost; a browser that cannot start fails here.
	messages := chromedp.Console(ctx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		acancel()
		t.Fatalf("browsertest: starting %s: %v", path, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.addError(m.String() + " " + m.URL)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		acancel()
		<-done
	})
	return b
}

// TrustKey makes the browser accept a TLS server certificate whose public
// key is the one in certFile (PEM), whatever CA signed it: a node's admin
// API with the cluster's own CA, with no other certificate error ignored.
func TrustKey(t testing.TB, certFile string) chromedp.ExecAllocatorOption {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(sum[:]))
}

func (b *Browser) addError(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, s)
}

// Errors returns the console errors, uncaught exceptions and error log
// entries (failed loads) seen so far.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// ArtefactDir is the folder for t's artefacts: $SHOAL_TEST_ARTEFACTS/<test>
// or, by default, test-artefacts/<test> at the module root (ignored by
// git). It is emptied once per test and printed in the test log.
func (b *Browser) ArtefactDir() string {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		return b.dir
	}
	root := os.Getenv("SHOAL_TEST_ARTEFACTS")
	if root == "" {
		root = filepath.Join(moduleRoot(), "test-artefacts")
	}
	dir := filepath.Join(root, strings.ReplaceAll(b.t.Name(), "/", "_"))
	if err := os.RemoveAll(dir); err != nil {
		b.t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.dir = dir
	b.t.Logf("screenshots in %s", dir)
	return dir
}

// Screenshot writes a full-page PNG named NN-name.png to the artefact
// folder and returns its path.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	dir := b.ArtefactDir()
	png, err := chromedp.Run(b.Ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.mu.Lock()
	b.shots++
	n := b.shots
	b.mu.Unlock()
	path := filepath.Join(dir, fmt.Sprintf("%02d-%s.png", n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", path)
	return path
}

// moduleRoot is the nearest folder above the working directory holding
// go.mod (tests run in their package's folder).
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return os.TempDir()
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}
