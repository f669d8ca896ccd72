package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
	"github.com/shoal-ha/shoal/internal/portres"
	"github.com/shoal-ha/shoal/internal/testlog"
)

// iscsiCmdTimeout is the --timeout every `shoalblk iscsi` call gets; a
// call still running after iscsiHardLimit seconds is killed, so a command
// that ignores its own bound fails the test instead of hanging it.
const (
	iscsiCmdTimeout = 5 * time.Second
	iscsiHardLimit  = "15"
)

// runIscsi runs `shoalblk iscsi SUB --timeout ... ARGS...` through runner
// (run or runStdout) under a hard time limit.
func runIscsi(t *testing.T, runner func(*testing.T, string, ...string) (string, error), bin, sub string, args ...string) (string, error) {
	t.Helper()
	argv := append([]string{"-k", "2", iscsiHardLimit, bin, "iscsi", sub, "--timeout", iscsiCmdTimeout.String()}, args...)
	return runner(t, "timeout", argv...)
}

// hasLine reports whether a line of out, split into fields, satisfies ok.
func hasLine(out string, ok func(fields []string) bool) bool {
	return slices.ContainsFunc(strings.Split(out, "\n"), func(line string) bool { return ok(strings.Fields(line)) })
}

// TestIscsiCLI runs `shoalblk iscsi ls` and `shoalblk iscsi pr` against a
// private tgtd: what they print must match the targets, LUNs, sizes and
// reservations the target really has, and bad addresses must fail with a
// message that names the problem.
func TestIscsiCLI(t *testing.T) {
	t.Parallel()
	rig := tgtrig.StartT(t, tgtrig.Config{})
	bin := buildShoalblk(t)
	disks := rig.MustAddTarget(t, "iqn.2026-01.io.shoal:cli-disks")
	disks.MustAddLUN(t, 1, 64<<20)
	disks.MustAddLUN(t, 2, 20<<20)
	spare := rig.MustAddTarget(t, "iqn.2026-01.io.shoal:cli-spare")
	spare.MustAddLUN(t, 1, 8<<20)
	want := map[string]map[uint64]uint64{
		disks.Name: {1: 64 << 20, 2: 20 << 20},
		spare.Name: {1: 8 << 20},
	}

	t.Run("ls", func(t *testing.T) { testIscsiLs(t, bin, rig, disks, want) })
	t.Run("pr", func(t *testing.T) { testIscsiPR(t, bin, spare) })
	t.Run("bad input", func(t *testing.T) { testIscsiBadInput(t, bin, rig, disks) })
}

// testIscsiLs checks the table and the JSON of `iscsi ls` on the portal
// against the disks the rig exports (want: target -> LUN -> bytes), and
// LUN 2 of cross against iscsi-readcapacity16.
func testIscsiLs(t *testing.T, bin string, rig *tgtrig.Rig, cross *tgtrig.Target, want map[string]map[uint64]uint64) {
	portal := "iscsi://" + rig.Portal
	out, err := runIscsi(t, runStdout, bin, "ls", "--json", portal)
	if err != nil {
		t.Fatal(err)
	}
	var reps []iscsiTargetReport
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("ls --json: %v", err)
	}
	got := map[string]map[uint64]uint64{}
	for _, r := range reps {
		if r.Error != "" {
			t.Errorf("target %s: %s", r.Target, r.Error)
		}
		got[r.Target] = map[uint64]uint64{}
		for _, l := range r.LUNs {
			if l.Error != "" {
				t.Errorf("target %s LUN %d: %s", r.Target, l.LUN, l.Error)
			}
			// tgtd adds LUN 0, its controller, to every target.
			if l.Type != "disk" {
				continue
			}
			if l.BlockSize != 512 {
				t.Errorf("target %s LUN %d: block size %d, want 512", r.Target, l.LUN, l.BlockSize)
			}
			got[r.Target][l.LUN] = l.Size
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ls --json lists %v, the rig exports %v", got, want)
	}

	out, err = runIscsi(t, runStdout, bin, "ls", portal)
	if err != nil {
		t.Fatal(err)
	}
	for target, luns := range want {
		for lun, size := range luns {
			if !hasLine(out, func(f []string) bool {
				return len(f) >= 6 && f[0] == target && f[1] == strconv.FormatUint(lun, 10) && f[2] == "disk" &&
					strings.Join(f[len(f)-3:], " ") == iscsiHumanSize(size)+" 512"
			}) {
				t.Errorf("ls table has no line for %s LUN %d of %s:\n%s", target, lun, iscsiHumanSize(size), out)
			}
		}
	}

	// An address with a LUN lists that LUN only.
	out, err = runIscsi(t, runStdout, bin, "ls", "--json", cross.URL(2))
	if err != nil {
		t.Fatal(err)
	}
	reps = nil
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("ls --json %s: %v", cross.URL(2), err)
	}
	if len(reps) != 1 || reps[0].Target != cross.Name || len(reps[0].LUNs) != 1 ||
		reps[0].LUNs[0].LUN != 2 || reps[0].LUNs[0].Size != want[cross.Name][2] {
		t.Fatalf("ls --json %s: %+v", cross.URL(2), reps)
	}

	// Another initiator agrees on the size of one LUN.
	if _, err := exec.LookPath("iscsi-readcapacity16"); err != nil {
		t.Log("iscsi-readcapacity16 not installed; sizes not cross-checked")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := cross.URL(2)
	rc, err := exec.CommandContext(ctx, "iscsi-readcapacity16", "-s", url).CombinedOutput()
	if err != nil {
		t.Fatalf("iscsi-readcapacity16 %s: %v: %s", url, err, rc)
	}
	if n, err := strconv.ParseUint(strings.TrimSpace(string(rc)), 10, 64); err != nil || n != got[cross.Name][2] {
		t.Fatalf("iscsi-readcapacity16 says %q for %s, shoalblk says %d", rc, url, got[cross.Name][2])
	}
}

// testIscsiPR checks `iscsi pr` on a fresh LUN, then while a Go session
// holds a key and a Write Exclusive - Registrants Only reservation.
func testIscsiPR(t *testing.T, bin string, tgt *tgtrig.Target) {
	url := tgt.URL(1)
	prJSON := func() iscsiPRReport {
		t.Helper()
		out, err := runIscsi(t, runStdout, bin, "pr", "--json", url)
		if err != nil {
			t.Fatal(err)
		}
		var rep iscsiPRReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("pr --json: %v", err)
		}
		if rep.Target != tgt.Name || rep.LUN != 1 {
			t.Fatalf("pr --json reports target %q LUN %d, asked for %s", rep.Target, rep.LUN, url)
		}
		return rep
	}
	prTable := func(lines ...string) {
		t.Helper()
		out, err := runIscsi(t, runStdout, bin, "pr", url)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if !hasLine(out, func(f []string) bool { return strings.Join(f, " ") == l }) {
				t.Errorf("pr table lacks %q:\n%s", l, out)
			}
		}
	}

	fresh := prJSON()
	if len(fresh.Keys) != 0 || fresh.Reserved || fresh.Holder != "" {
		t.Fatalf("fresh LUN: %+v", fresh)
	}
	prTable("keys (none registered)", "reservation (none)")

	cfg, err := iscsi.ConfigFromURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.InitiatorName = "iqn.2026-01.io.shoal:cli-holder"
	cfg.Logger = testlog.New(t, "iscsi")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := iscsi.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const key = 0x5ea15e0001
	keyText := fmt.Sprintf("0x%016x", uint64(key))
	if err := d.Register(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := d.Reserve(ctx, key, blockdev.WriteExclusiveRegistrantsOnly); err != nil {
		t.Fatal(err)
	}

	held := prJSON()
	if !slices.Equal(held.Keys, []string{keyText}) || !held.Reserved || held.Holder != keyText ||
		held.Type != 5 || held.TypeName != "Write Exclusive - Registrants Only" || held.Generation <= fresh.Generation {
		t.Fatalf("pr --json while %s holds type 5: %+v (fresh %+v)", keyText, held, fresh)
	}
	prTable("keys "+keyText, "reservation Write Exclusive - Registrants Only by "+keyText)

	// Looking did not disturb the holder.
	res, err := d.ReadReservation(ctx)
	if err != nil || !res.Held || res.Key != key || res.Type != blockdev.WriteExclusiveRegistrantsOnly {
		t.Fatalf("reservation after shoalblk looked: %+v, %v", res, err)
	}
}

// testIscsiBadInput: each bad address fails with a message that names
// what is wrong, and within the command's --timeout.
func testIscsiBadInput(t *testing.T, bin string, rig *tgtrig.Rig, tgt *tgtrig.Target) {
	// A port bound but never listened on: connections are refused, and
	// no other program can take it meanwhile.
	res, err := portres.Reserve("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Release()
	closed := res.Addr()
	// A portal that accepts connections and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	portal, missing := "iscsi://"+rig.Portal, "iqn.2026-01.io.shoal:cli-nosuch"
	for _, c := range []struct {
		args []string
		// says lists what the output must contain; "a|b" takes either.
		says []string
	}{
		{[]string{"ls", "http://" + rig.Portal}, []string{"does not start with iscsi://"}},
		{[]string{"pr", portal + "/" + tgt.Name + "/x"}, []string{"bad LUN", `"x"`}},
		{[]string{"ls", "iscsi://127.0.0.1:99999"}, []string{"bad port", "99999"}},
		{[]string{"pr", portal}, []string{"names no target and LUN"}},
		{[]string{"ls", portal + "/" + missing}, []string{missing, "target not found"}},
		{[]string{"pr", portal + "/" + missing + "/1"}, []string{missing, "target not found"}},
		{[]string{"ls", tgt.URL(7)}, []string{tgt.Name, "LUN 7 not found"}},
		{[]string{"pr", tgt.URL(7)}, []string{"LUN 7", tgt.Name, "logical unit not supported"}},
		{[]string{"ls", "iscsi://" + closed}, []string{closed, "connection refused"}},
		{[]string{"pr", "iscsi://" + closed + "/" + tgt.Name + "/1"}, []string{closed, "connection refused"}},
		{[]string{"ls", "--timeout", "1s", "iscsi://" + silent.Addr().String()}, []string{silent.Addr().String(), "login", "deadline exceeded"}},
		{[]string{"pr", "--timeout", "1s", "iscsi://" + silent.Addr().String() + "/" + tgt.Name + "/1"}, []string{silent.Addr().String(), "login", "deadline exceeded"}},
	} {
		start := time.Now()
		out, err := runIscsi(t, run, bin, c.args[0], c.args[1:]...)
		took := time.Since(start)
		if err == nil {
			t.Errorf("iscsi %v succeeded", c.args)
			continue
		}
		if strings.Contains(out, "panic") {
			t.Errorf("iscsi %v panicked:\n%s", c.args, out)
		}
		for _, s := range c.says {
			if !slices.ContainsFunc(strings.Split(s, "|"), func(s string) bool { return strings.Contains(out, s) }) {
				t.Errorf("iscsi %v: error does not say %q:\n%s", c.args, s, out)
			}
		}
		// Each failure is said at once, or (silent portal) when the
		// 1 s --timeout given last ends: never by waiting out the 5 s
		// iscsiCmdTimeout given first. The bound leaves a loaded machine
		// seconds to start the process.
		if limit := iscsiCmdTimeout - time.Second; took > limit {
			t.Errorf("iscsi %v took %v, more than %v: it waited out a timeout", c.args, took, limit)
		}
	}
}
