package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev/mirror"
	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/adminclient"
	"github.com/shoal-ha/shoal/internal/nodetest"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/internal/testutil"
	"github.com/shoal-ha/shoal/node"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/store/storenode"
)

// On a running cluster shoalblk asks a node's admin API: status of the
// open volume and the online store check with a read-only certificate;
// fail-leg and remove-leg with an admin one (a read-only one is refused,
// and so is the last in-sync leg); LEGs and --admin together are refused.
func TestShoalblkThroughAdminAPI(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a node and an etcd member")
	}
	c := nodetest.NewInProcCluster(t, 1, nodetest.InProcOptions{FileLegs: true, NoStart: true})
	nd := c.Nodes[0]
	part := storenode.New(storenode.Config{Slot: 0, Format: true, Logger: testlog.New(t, "store"), Handlers: map[string]store.Handler{}})
	nd.Parts = []node.Part{part}
	nd.Start()
	testutil.WaitFor(t, 30*time.Second, "the store open", func() bool { return part.Store() != nil })
	if err := part.Store().WriteFile("index.html", []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	admin, err := cluster.IssueCert(c.Etcd.PKI, filepath.Join(dir, "admin"), "shoalblk-test", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := cluster.IssueClientCert(c.Etcd.PKI, filepath.Join(dir, "ro"), "auditor", []string{"read-only"})
	if err != nil {
		t.Fatal(err)
	}
	as := func(f cluster.CertFiles, args ...string) (string, string, int) {
		t.Helper()
		return runInProcess(t, append(args, "--admin", nd.AdminURL(), "--cacert", f.CA, "--cert", f.Cert, "--key", f.Key)...)
	}

	out, errOut, code := as(ro, "status")
	if code != 0 || !strings.Contains(out, "leg 0  in-sync") || !strings.Contains(out, "leg 1  in-sync") {
		t.Fatalf("status through the node: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = as(ro, "store", "check")
	if code != 0 || !strings.Contains(out, "0 problems") {
		t.Fatalf("store check through the node: exit %d\n%s%s", code, out, errOut)
	}
	// ls, stat and cat read the node's open store; paths may be rooted.
	if out, errOut, code = as(ro, "store", "ls", "/"); code != 0 || !strings.Contains(out, "index.html") || !strings.Contains(out, "-rw-r--r--") {
		t.Fatalf("store ls through the node: exit %d\n%s%s", code, out, errOut)
	}
	var e storenode.Entry
	if out, errOut, code = as(ro, "store", "stat", "--json", "/index.html"); code != 0 || json.Unmarshal([]byte(out), &e) != nil || e.Size != 5 || e.Ino == 0 || e.IsDir {
		t.Fatalf("store stat through the node: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code = as(ro, "store", "cat", "index.html"); code != 0 || out != "hello" {
		t.Fatalf("store cat through the node: exit %d %q%s", code, out, errOut)
	}
	if _, errOut, code = as(ro, "store", "cat", "nope.html"); code == 0 || !strings.Contains(errOut, "not exist") {
		t.Fatalf("store cat of a missing file through the node: exit %d\n%s", code, errOut)
	}
	if _, errOut, code = as(ro, "store", "ls", ".", c.Legs[0]); code == 0 || !strings.Contains(errOut, "PATH only") {
		t.Fatalf("store ls with LEGs and --admin: exit %d\n%s", code, errOut)
	}
	if _, errOut, code = as(ro, "fail-leg", "--leg", "1"); code == 0 || !strings.Contains(errOut, "403") || !strings.Contains(errOut, "admin") {
		t.Fatalf("fail-leg with a read-only certificate: exit %d\n%s", code, errOut)
	}
	// Every route that changes the volume refuses a read-only client and
	// one without credentials, before doing anything.
	roClient, err := (adminclient.Target{Admin: []string{nd.AdminURL()}, CACert: ro.CA, Cert: ro.Cert, Key: ro.Key}).Client()
	if err != nil {
		t.Fatal(err)
	}
	anon, err := (adminclient.Target{Admin: []string{nd.AdminURL()}, CACert: ro.CA}).Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{"/api/volume/legs/fail", "/api/volume/legs/remove", "/api/volume/legs/add", "/api/volume/legs/return", "/api/volume/resync", "/api/volume/scrub", "/api/locks/force-release"} {
		if err := roClient.Post(context.Background(), route, map[string]string{"leg": "1", "addr": filepath.Join(dir, "x.img"), "id": "x"}, nil); !errors.Is(err, adminclient.ErrForbidden) {
			t.Errorf("POST %s with a read-only certificate: %v, want 403", route, err)
		}
		if err := anon.Post(context.Background(), route, nil, nil); !errors.Is(err, adminclient.ErrNoAuth) {
			t.Errorf("POST %s without credentials: %v, want 401", route, err)
		}
	}
	if _, errOut, code = runInProcess(t, "fail-leg", "--leg", "1", "--admin", nd.AdminURL(), "--cacert", admin.CA); code == 0 || !strings.Contains(errOut, "401") {
		t.Fatalf("fail-leg without credentials: exit %d\n%s", code, errOut)
	}
	if _, errOut, code = as(admin, "fail-leg", "--leg", "1", c.Legs[0]); code == 0 || !strings.Contains(errOut, "not both") {
		t.Fatalf("LEGs and --admin together: exit %d\n%s", code, errOut)
	}
	out, errOut, code = as(admin, "fail-leg", "--leg", "1", "--json")
	var tab mirror.LegTable
	if code != 0 || json.Unmarshal([]byte(out), &tab) != nil || len(tab.Legs) != 2 || tab.Legs[1].State != mirror.LegFailed {
		t.Fatalf("fail-leg through the node: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ = as(ro, "status"); !strings.Contains(out, "leg 1  failed") {
		t.Fatalf("status after fail-leg:\n%s", out)
	}
	// The failed leg comes back: the node copies what it missed while
	// the store keeps being written.
	if err := part.Store().WriteFile("while-failed.html", []byte("missed by leg 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code = as(ro, "resync", "--leg", "1"); code == 0 || !strings.Contains(errOut, "403") {
		t.Fatalf("resync with a read-only certificate: exit %d\n%s", code, errOut)
	}
	if out, errOut, code = as(admin, "resync", "--leg", "1"); code != 0 || !strings.Contains(out, "every leg in sync") {
		t.Fatalf("resync through the node: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ = as(ro, "status"); !strings.Contains(out, "leg 1  in-sync") {
		t.Fatalf("status after resync:\n%s", out)
	}
	if _, errOut, code = as(admin, "resync", "--leg", "0"); code == 0 || !strings.Contains(errOut, "not failed") {
		t.Fatalf("resync of an in-sync leg: exit %d\n%s", code, errOut)
	}
	if _, _, code = as(admin, "fail-leg", "--leg", "1"); code != 0 {
		t.Fatal("fail-leg again")
	}
	if _, errOut, code = as(admin, "remove-leg", "--leg", "0"); code == 0 || !strings.Contains(errOut, "in-sync") {
		t.Fatalf("remove-leg of the last in-sync leg: exit %d\n%s", code, errOut)
	}
	if out, errOut, code = as(admin, "remove-leg", "--leg", c.Legs[1]); code != 0 || !strings.Contains(out, "remove-leg: done") {
		t.Fatalf("remove-leg through the node: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ = as(ro, "status"); strings.Contains(out, "leg 1") {
		t.Fatalf("status after remove-leg still lists leg 1:\n%s", out)
	}
	// The volume keeps working on its one leg; a new leg (a file the
	// node creates) is added and filled while it does.
	if err := part.Store().WriteFile("after.html", []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "fresh.img")
	if out, errOut, code = as(admin, "add-leg", "--leg", fresh); code != 0 || !strings.Contains(out, "in sync") {
		t.Fatalf("add-leg through the node: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ = as(ro, "status"); !strings.Contains(out, "leg 1  in-sync") || !strings.Contains(out, fresh) {
		t.Fatalf("status after add-leg:\n%s", out)
	}
	if out, errOut, code = as(ro, "store", "check"); code != 0 || !strings.Contains(out, "0 problems") {
		t.Fatalf("store check after the leg changes: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code = as(admin, "scrub", "--repair"); code != 0 || !strings.Contains(out, ": 0 bad copies") {
		t.Fatalf("scrub through the node: exit %d\n%s%s", code, out, errOut)
	}
	// With the node stopped, the two legs hold the same volume.
	if err := nd.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code = runInProcess(t, "check", c.Legs[0], fresh); code != 0 {
		t.Fatalf("offline check of the legs: exit %d\n%s%s", code, out, errOut)
	}
}
