package nodetest

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/fixtures/tgtrig"
)

// ISCSILegs starts a tgtd with two targets of one 64 MiB LUN each and
// returns their URLs: two legs with persistent reservations.
func ISCSILegs(t testing.TB) []string {
	t.Helper()
	if err := tgtrig.Available(); err != nil {
		t.Fatalf("tgtd is needed (make test and make bench install it): %v", err)
	}
	rig := tgtrig.StartT(t, tgtrig.Config{Dir: t.TempDir()})
	var urls []string
	for i := 0; i < 2; i++ {
		tgt := rig.MustAddTarget(t, fmt.Sprintf("iqn.2026-11.io.shoal.test:leg%d", i))
		tgt.MustAddLUN(t, 1, 64<<20)
		urls = append(urls, tgt.URL(1))
	}
	return urls
}

// FileLegs names two 64 MiB leg files that FormatVolume creates: legs
// without reservations (lease-only fencing).
func FileLegs(t testing.TB) []string {
	dir := t.TempDir()
	return []string{filepath.Join(dir, "leg0.img"), filepath.Join(dir, "leg1.img")}
}

// FormatVolume formats a mirror over legs with shoalblk: 4 slots, 1 MiB
// regions.
func FormatVolume(t testing.TB, legs []string) {
	t.Helper()
	args := []string{"format", "--slots", "4", "--region-size", "1M"}
	if !strings.HasPrefix(legs[0], "iscsi://") {
		args = append(args, "--size", "64M")
	}
	if out, err := exec.Command(Binary(t, "shoalblk"), append(args, legs...)...).CombinedOutput(); err != nil {
		t.Fatalf("shoalblk format: %v\n%s", err, out)
	}
}

// NewVolumeCluster formats a volume over legs and starts three nodes that
// share it, node i writing with bitmap slot i.
func NewVolumeCluster(t testing.TB, legs []string, opts Options) *Cluster {
	t.Helper()
	// shoald builds while shoalblk builds and formats; NewCluster waits
	// for it (and reports a failed build).
	go buildBinary("shoald", "github.com/shoal-ha/shoal/cmd/shoald")
	FormatVolume(t, legs)
	opts.NoStart = true
	c := NewCluster(t, 3, opts)
	for i, nd := range c.Nodes {
		nd.Args = append(nd.Args, "--volume-legs", strings.Join(legs, ","), "--volume-slot", strconv.Itoa(i))
		nd.Start()
	}
	c.WaitMembers(60*time.Second, 3, c.Nodes...)
	// A node is a ready member before its volume is open: wait for both.
	for _, nd := range c.Nodes {
		c.WaitFor(30*time.Second, nd.Name+" to open the volume", nd.VolumeOpen)
	}
	return c
}

// VolumeOpen asks the node's admin API whether its volume is open.
func (nd *Node) VolumeOpen() bool {
	resp, err := nd.AdminClient(time.Second).Get(nd.AdminURL() + "/api/volume")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// StoreOpen asks the node's admin API whether its current incarnation has
// the store open (web tier on: Options.Web).
func (nd *Node) StoreOpen() bool {
	resp, err := nd.AdminClient(time.Second).Get(nd.AdminURL() + "/api/store/stat?path=.")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
