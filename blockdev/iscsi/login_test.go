package iscsi_test

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev/iscsi"
	"github.com/shoal-ha/shoal/fixtures/tgtrig"
)

func TestLoginCHAP(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	oneWay := rig.MustAddTarget(t, testIQN+":chap")
	oneWay.MustAddLUN(t, 1, 8<<20)
	if err := oneWay.SetCHAP("shoaluser", "secret-0123456"); err != nil {
		t.Fatal(err)
	}
	mutual := rig.MustAddTarget(t, testIQN+":mutual")
	mutual.MustAddLUN(t, 1, 8<<20)
	if err := mutual.SetCHAP("shoaluser2", "secret-abcdefg"); err != nil {
		t.Fatal(err)
	}
	if err := mutual.SetMutualCHAP("targetuser", "tsecret-987654"); err != nil {
		t.Fatal(err)
	}

	t.Run("no credentials refused", func(t *testing.T) {
		cfg := testConfig(t, oneWay, 1)
		_, err := iscsi.Open(testCtx(t), cfg)
		if !errors.Is(err, iscsi.ErrAuthFailed) {
			t.Fatalf("login without CHAP to a CHAP target: %v, want ErrAuthFailed", err)
		}
	})
	t.Run("wrong secret refused", func(t *testing.T) {
		cfg := testConfig(t, oneWay, 1)
		cfg.User, cfg.Secret = "shoaluser", "wrong-secret-0"
		_, err := iscsi.Open(testCtx(t), cfg)
		if !errors.Is(err, iscsi.ErrAuthFailed) {
			t.Fatalf("wrong secret: %v, want ErrAuthFailed", err)
		}
		if !strings.Contains(err.Error(), "authentication failure") {
			t.Fatalf("error does not say why: %v", err)
		}
	})
	t.Run("one-way", func(t *testing.T) {
		cfg := testConfig(t, oneWay, 1)
		cfg.User, cfg.Secret = "shoaluser", "secret-0123456"
		d := openDevice(t, cfg)
		if err := d.ReadAt(testCtx(t), make([]byte, 4096), 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("one-way from URL", func(t *testing.T) {
		u := strings.Replace(oneWay.URL(1), "iscsi://", "iscsi://shoaluser%secret-0123456@", 1)
		cfg, err := iscsi.ConfigFromURL(u)
		if err != nil {
			t.Fatal(err)
		}
		openDevice(t, cfg)
	})
	t.Run("mutual", func(t *testing.T) {
		cfg := testConfig(t, mutual, 1)
		cfg.User, cfg.Secret = "shoaluser2", "secret-abcdefg"
		cfg.TargetUser, cfg.TargetSecret = "targetuser", "tsecret-987654"
		d := openDevice(t, cfg)
		if err := d.ReadAt(testCtx(t), make([]byte, 512), 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("mutual with wrong target secret", func(t *testing.T) {
		cfg := testConfig(t, mutual, 1)
		cfg.User, cfg.Secret = "shoaluser2", "secret-abcdefg"
		cfg.TargetUser, cfg.TargetSecret = "targetuser", "not-the-secret"
		_, err := iscsi.Open(testCtx(t), cfg)
		if !errors.Is(err, iscsi.ErrAuthFailed) || !strings.Contains(err.Error(), "mutual") {
			t.Fatalf("target with the wrong secret accepted or unclear error: %v", err)
		}
	})
}

func TestLoginUnknownTarget(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	tgt := rig.MustAddTarget(t, testIQN+":known")
	tgt.MustAddLUN(t, 1, 4<<20)
	cfg := testConfig(t, tgt, 1)
	cfg.Target = testIQN + ":unknown"
	_, err := iscsi.Open(testCtx(t), cfg)
	if !errors.Is(err, iscsi.ErrTargetNotFound) {
		t.Fatalf("unknown target: %v, want ErrTargetNotFound", err)
	}
}

func TestDiscoveryAndInquiry(t *testing.T) {
	rig := tgtrig.StartT(t, tgtrig.Config{})
	a := rig.MustAddTarget(t, testIQN+":a")
	a.MustAddLUN(t, 1, 16<<20)
	a.MustAddLUN(t, 2, 8<<20)
	b := rig.MustAddTarget(t, testIQN+":b")
	b.MustAddLUN(t, 1, 4<<20)
	ctx := testCtx(t)

	cfg := testConfig(t, a, 1)
	targets, err := iscsi.Discover(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tg := range targets {
		names[tg.Name] = true
		if len(tg.Addresses) == 0 || iscsi.PortalOf(tg.Addresses[0]) != rig.Portal {
			t.Errorf("target %s announced at %v, want %s", tg.Name, tg.Addresses, rig.Portal)
		}
	}
	if len(targets) != 2 || !names[a.Name] || !names[b.Name] {
		t.Fatalf("discovered %+v, want %s and %s", targets, a.Name, b.Name)
	}

	s, err := iscsi.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	luns, err := s.ReportLUNs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(luns) != 3 || luns[0] != 0 || luns[1] != 1 || luns[2] != 2 {
		t.Fatalf("REPORT LUNS = %v, want [0 1 2]", luns)
	}
	inq, err := s.Inquiry(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if inq.DeviceType != 0 || inq.Vendor == "" {
		t.Fatalf("INQUIRY of LUN 2 = %+v", inq)
	}
	pages, err := s.SupportedVPDPages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pages), "\x83") {
		t.Fatalf("VPD pages %x lack 0x83", pages)
	}
	ids, err := s.DeviceIdentifiers(ctx, 1)
	if err != nil || len(ids) == 0 {
		t.Fatalf("device identifiers %v, %v", ids, err)
	}
	if _, err := s.UnitSerial(ctx, 1); err != nil {
		t.Fatal(err)
	}
	capa, err := s.ReadCapacity(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if capa.Bytes() != 8<<20 {
		t.Fatalf("LUN 2 capacity %d, want %d", capa.Bytes(), 8<<20)
	}
	// An out-of-range read is an illegal request, told apart by errors.Is.
	err = s.Read(ctx, 2, capa.Blocks(), 1, make([]byte, 512))
	if !errors.Is(err, iscsi.ErrIllegalRequest) {
		t.Fatalf("read past the end: %v, want ErrIllegalRequest", err)
	}
	var se *iscsi.SCSIError
	if !errors.As(err, &se) || !se.HasSense || se.Sense.ASC != 0x21 {
		t.Fatalf("read past the end: sense %+v, want ASC 0x21", se)
	}

	// The reference initiator agrees on the LUNs and sizes.
	if _, err := exec.LookPath("iscsi-ls"); err != nil {
		t.Fatalf("iscsi-ls missing: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "iscsi-ls", "-s", "iscsi://"+rig.Portal+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("iscsi-ls: %v: %s", err, out)
	}
	// iscsi-ls prints last LBA times block length in whole MiB.
	capa1, err := s.ReadCapacity(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	lsSize := func(c iscsi.Capacity) string {
		return strconv.FormatUint(c.LastLBA*uint64(c.BlockLength)>>20, 10) + "M"
	}
	for _, want := range []string{a.Name, b.Name, "Lun:2    Type:DIRECT_ACCESS (Size:" + lsSize(capa) + ")",
		"Lun:1    Type:DIRECT_ACCESS (Size:" + lsSize(capa1) + ")"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("iscsi-ls output lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.CommandContext(cctx, "iscsi-readcapacity16", a.URL(2)).CombinedOutput()
	if err != nil {
		t.Fatalf("iscsi-readcapacity16: %v: %s", err, out)
	}
	m := regexp.MustCompile(`RETURNED LOGICAL BLOCK ADDRESS:(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("iscsi-readcapacity16 output: %s", out)
	}
	if last, _ := strconv.ParseUint(string(m[1]), 10, 64); last != capa.LastLBA {
		t.Fatalf("iscsi-readcapacity16 says last LBA %d, Shoal says %d", last, capa.LastLBA)
	}
}
