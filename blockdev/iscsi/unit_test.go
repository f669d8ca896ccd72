package iscsi

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/scsi"
)

func TestWindow(t *testing.T) {
	w := window{cmdSN: 10, expCmdSN: 10, maxCmdSN: 11}
	if !w.open() || w.take() != 10 || !w.open() || w.take() != 11 || w.open() {
		t.Fatal("window of two did not close after two commands")
	}
	if w.update(12, 10) {
		t.Fatal("MaxCmdSN < ExpCmdSN-1 must be ignored")
	}
	if !w.update(12, 20) || !w.open() {
		t.Fatal("window did not open")
	}
	if w.update(11, 15) || w.maxCmdSN != 20 || w.expCmdSN != 12 {
		t.Fatalf("stale update moved the window back: %+v", w)
	}
	// Serial arithmetic across the wrap.
	w = window{cmdSN: 0xffffffff, expCmdSN: 0xffffffff, maxCmdSN: 1}
	for i := 0; i < 3; i++ {
		if !w.open() {
			t.Fatalf("closed at %d", i)
		}
		w.take()
	}
	if w.open() {
		t.Fatal("open past MaxCmdSN across the wrap")
	}
	w.status(5)
	w.status(3)
	if w.expStatSN != 6 {
		t.Fatalf("ExpStatSN %d", w.expStatSN)
	}
}

func TestParseURL(t *testing.T) {
	a, err := ParseURL("iscsi://user%pa%ss@10.0.0.1:3261/iqn.2026-01.io.shoal:d/3")
	if err != nil {
		t.Fatal(err)
	}
	if a.User != "user" || a.Password != "pa%ss" || a.Portal != "10.0.0.1:3261" || a.Target != "iqn.2026-01.io.shoal:d" || a.LUN != 3 || !a.HasLUN {
		t.Fatalf("%+v", a)
	}
	if strings.Contains(a.String(), "pa%ss") {
		t.Fatal("String shows the password")
	}
	a, err = ParseURL("iscsi://[::1]/iqn.x:y/0")
	if err != nil || a.Portal != "[::1]:3260" || a.LUN != 0 || !a.HasLUN {
		t.Fatalf("%+v %v", a, err)
	}
	a, err = ParseURL("iscsi://host")
	if err != nil || a.Target != "" || a.Portal != "host:3260" {
		t.Fatalf("%+v %v", a, err)
	}
	for _, bad := range []string{"http://x/y/1", "iscsi:///t/1", "iscsi://h:99999/t/1", "iscsi://h/t/x", "iscsi://%pw@h/t/1"} {
		if _, err := ParseURL(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	_, err = ParseURL("iscsi://u%secret@h/t/x")
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Portal = "h:3260"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"FirstBurstLength": func(c *Config) { c.FirstBurstLength = c.MaxBurstLength + 1 },
		"Secret":           func(c *Config) { c.User = "u" },
		"TargetSecret":     func(c *Config) { c.User, c.Secret, c.TargetUser, c.TargetSecret = "u", "s", "t", "s" },
		"QueueDepth":       func(c *Config) { c.QueueDepth = 0 },
		"Portal":           func(c *Config) { c.Portal = "" },
	} {
		c := DefaultConfig()
		c.Portal = "h:3260"
		mut(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestNegotiation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HeaderDigest = true
	n := newNegotiator(&cfg, false)
	n.offer(&cfg)
	reply, err := n.apply(&cfg, []pdu.KV{
		kv("HeaderDigest", "CRC32C"), kv("DataDigest", "None"), kv("MaxRecvDataSegmentLength", "8192"),
		kv("MaxBurstLength", "262144"), kv("FirstBurstLength", "65536"), kv("InitialR2T", "Yes"),
		kv("ImmediateData", "Yes"), kv("MaxOutstandingR2T", "1"), kv("TargetAlias", "disk"),
		kv("OFMarker", "No"), kv("X-vendor", "1"), kv("SomethingNew", "1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	p := n.p
	if !p.HeaderDigest || p.DataDigest || p.MaxXmitDataSegment != 8192 || p.MaxBurstLength != 262144 ||
		p.FirstBurstLength != 65536 || !p.InitialR2T || !p.ImmediateData || p.TargetAlias != "disk" {
		t.Fatalf("%+v", p)
	}
	// The target's own offers get answers; unknown ones NotUnderstood.
	got := map[string]string{}
	for _, kv := range reply {
		got[kv.Key] = kv.Value
	}
	if got["OFMarker"] != "No" || got["SomethingNew"] != "NotUnderstood" || len(got) != 2 {
		t.Fatalf("reply %v", reply)
	}
	// Choosing a digest that was not offered is a protocol error.
	cfg.DataDigest = false
	n = newNegotiator(&cfg, false)
	n.offer(&cfg)
	if _, err := n.apply(&cfg, []pdu.KV{kv("DataDigest", "CRC32C")}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("unoffered digest: %v", err)
	}
	if _, err := n.apply(&cfg, []pdu.KV{kv("MaxBurstLength", "x")}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad number: %v", err)
	}
}

// loginRsp builds a login response for the machine.
func loginRsp(transit bool, csg, nsg pdu.Stage) *pdu.LoginResponse {
	return &pdu.LoginResponse{Transit: transit, CSG: csg, NSG: nsg}
}

func TestLoginMachineCHAPMutual(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Portal, cfg.Target = "h:1", "iqn.t:x"
	cfg.User, cfg.Secret, cfg.TargetUser, cfg.TargetSecret = "me", "my-secret-123", "tgt", "tgt-secret-456"
	m := newLoginMachine(&cfg, false)
	m.randRead = func(b []byte) (int, error) {
		for i := range b {
			b[i] = byte(i)
		}
		return len(b), nil
	}
	st := m.first()
	if v, _ := pdu.Lookup(st.kvs, "AuthMethod"); v != "CHAP" || st.transit {
		t.Fatalf("first %+v", st)
	}
	st, done, err := m.next(loginRsp(false, 0, 0), pdu.EncodeText([]pdu.KV{kv("AuthMethod", "CHAP")}))
	if err != nil || done {
		t.Fatal(err)
	}
	if v, _ := pdu.Lookup(st.kvs, "CHAP_A"); v != "5" {
		t.Fatalf("%+v", st)
	}
	challenge := []byte{9, 8, 7, 6}
	st, _, err = m.next(loginRsp(false, 0, 0), pdu.EncodeText([]pdu.KV{kv("CHAP_A", "5"), kv("CHAP_I", "42"), kv("CHAP_C", "0x09080706")}))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := pdu.Lookup(st.kvs, "CHAP_R")
	if want := encodeCHAPBinary(chapResponse(42, "my-secret-123", challenge)); r != want || !st.transit {
		t.Fatalf("CHAP_R %s want %s", r, want)
	}
	// The target answers our challenge: first wrongly.
	good := encodeCHAPBinary(chapResponse(m.myID, "tgt-secret-456", m.myChallenge))
	saved := *m
	_, _, err = m.next(loginRsp(true, 0, 1), pdu.EncodeText([]pdu.KV{kv("CHAP_N", "tgt"), kv("CHAP_R", "0x00")}))
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong target response: %v", err)
	}
	*m = saved
	st, done, err = m.next(loginRsp(true, 0, 1), pdu.EncodeText([]pdu.KV{kv("CHAP_N", "tgt"), kv("CHAP_R", good)}))
	if err != nil || done || st.csg != pdu.StageOperational || st.nsg != pdu.StageFullFeature {
		t.Fatalf("%+v %v", st, err)
	}
	_, done, err = m.next(loginRsp(true, 1, 3), pdu.EncodeText([]pdu.KV{kv("HeaderDigest", "None"), kv("DataDigest", "None")}))
	if err != nil || !done {
		t.Fatalf("operational: %v %v", done, err)
	}
}

func TestLoginMachineErrors(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Portal, cfg.Target = "h:1", "iqn.t:x"
	m := newLoginMachine(&cfg, false)
	m.first()
	_, _, err := m.next(&pdu.LoginResponse{StatusClass: 2, StatusDetail: 1}, nil)
	if !errors.Is(err, ErrAuthFailed) {
		t.Fatal(err)
	}
	m = newLoginMachine(&cfg, false)
	m.first()
	_, _, err = m.next(&pdu.LoginResponse{StatusClass: 2, StatusDetail: 3}, nil)
	if !errors.Is(err, ErrTargetNotFound) {
		t.Fatal(err)
	}
	m = newLoginMachine(&cfg, false)
	m.first()
	_, _, err = m.next(loginRsp(true, 1, 3), nil)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("wrong stage: %v", err)
	}
	m = newLoginMachine(&cfg, false)
	m.first()
	_, _, err = m.next(loginRsp(true, 0, 1), []byte("AuthMethod=None"))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("text without NUL: %v", err)
	}
}

func TestSCSIErrorMatching(t *testing.T) {
	rc := &SCSIError{Op: 0x2a, Status: scsi.StatusReservationConflict}
	if !errors.Is(rc, blockdev.ErrReservationConflict) || errors.Is(rc, ErrUnitAttention) {
		t.Fatal("reservation conflict")
	}
	ua := &SCSIError{Status: scsi.StatusCheckCondition, HasSense: true, Sense: scsi.Sense{Key: scsi.KeyUnitAttention, ASC: 0x29}}
	if !errors.Is(ua, ErrUnitAttention) || !errors.Is(ua, ErrCheckCondition) || errors.Is(ua, blockdev.ErrIO) {
		t.Fatal("unit attention")
	}
	me := &SCSIError{Status: scsi.StatusCheckCondition, HasSense: true, Sense: scsi.Sense{Key: scsi.KeyMediumError}}
	if !errors.Is(me, ErrMediumError) || !errors.Is(me, blockdev.ErrIO) {
		t.Fatal("medium error")
	}
	ir := &SCSIError{Status: scsi.StatusCheckCondition, HasSense: true, Sense: scsi.Sense{Key: scsi.KeyIllegalRequest, ASC: 0x24}}
	if !errors.Is(ir, ErrIllegalRequest) || errors.Is(ir, blockdev.ErrIO) {
		t.Fatal("illegal request")
	}
	if !errors.Is(outcomeUnknown(0x2a, errConnLost), blockdev.ErrWriteOutcomeUnknown) {
		t.Fatal("outcome unknown")
	}
	if e := notConnected(errConnLost); !errors.Is(e, ErrNotConnected) || !errors.Is(e, blockdev.ErrIO) {
		t.Fatal("not connected")
	}
}

func TestParseSendTargets(t *testing.T) {
	text := pdu.EncodeText([]pdu.KV{kv("TargetName", "iqn.a"), kv("TargetAddress", "10.0.0.1:3260,1"),
		kv("TargetAddress", "[::1]:3260,2"), kv("TargetName", "iqn.b")})
	ts, err := parseSendTargets(text)
	if err != nil || len(ts) != 2 || len(ts[0].Addresses) != 2 || PortalOf(ts[0].Addresses[1]) != "[::1]:3260" {
		t.Fatalf("%+v %v", ts, err)
	}
	if _, err := parseSendTargets(pdu.EncodeText([]pdu.KV{kv("TargetAddress", "x")})); !errors.Is(err, ErrProtocol) {
		t.Fatal(err)
	}
}

func TestSchemeRegistered(t *testing.T) {
	found := false
	for _, s := range blockdev.Schemes() {
		found = found || s == "iscsi"
	}
	if !found {
		t.Fatal("iscsi scheme not registered")
	}
}

func kv(k, v string) pdu.KV { return pdu.KV{Key: k, Value: v} }

func TestSenseData(t *testing.T) {
	for _, tc := range []struct {
		seg   []byte
		sense []byte
		ok    bool
	}{
		{nil, nil, true},
		{[]byte{0}, nil, true},
		{[]byte{0, 0}, []byte{}, true},
		{[]byte{0, 3, 0x70, 0, 6, 9}, []byte{0x70, 0, 6}, true},
		{[]byte{0, 5, 0x70, 0}, nil, false},
		{[]byte{0xff, 0xff}, nil, false},
	} {
		sense, ok := senseData(tc.seg)
		if ok != tc.ok || !bytes.Equal(sense, tc.sense) {
			t.Errorf("senseData(%x) = %x, %v; want %x, %v", tc.seg, sense, ok, tc.sense, tc.ok)
		}
	}
}
