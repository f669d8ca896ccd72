package iscsi

import (
	"crypto/rand"
	"fmt"

	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
)

// loginMachine decides the login conversation (RFC 7143 section 6) one
// response at a time: security stage with AuthMethod None or CHAP
// (one-way or mutual), then the operational stage. It does no I/O; the
// connection sends what it returns and feeds it what the target answers.
type loginMachine struct {
	cfg       *Config
	discovery bool
	neg       *negotiator
	stage     pdu.Stage
	state     loginState
	// mutual CHAP: the challenge this initiator sent.
	myID        byte
	myChallenge []byte
	// pending text from a response with the C bit.
	partial []byte
	// randRead is crypto/rand.Read, swappable in tests.
	randRead func([]byte) (int, error)
}

type loginState int

const (
	lsStart loginState = iota
	lsAuthMethodSent
	lsChapASent
	lsChapRSent
	lsOperational
	lsDone
)

// step is one request the machine wants sent.
type step struct {
	transit  bool
	csg, nsg pdu.Stage
	kvs      []pdu.KV
}

func newLoginMachine(cfg *Config, discovery bool) *loginMachine {
	return &loginMachine{cfg: cfg, discovery: discovery, neg: newNegotiator(cfg, discovery), randRead: rand.Read}
}

func (m *loginMachine) names() []pdu.KV {
	kvs := []pdu.KV{{Key: "InitiatorName", Value: m.cfg.InitiatorName}}
	if m.discovery {
		kvs = append(kvs, pdu.KV{Key: "SessionType", Value: "Discovery"})
	} else {
		kvs = append(kvs, pdu.KV{Key: "SessionType", Value: "Normal"}, pdu.KV{Key: "TargetName", Value: m.cfg.Target})
	}
	return kvs
}

// first returns the opening request.
func (m *loginMachine) first() step {
	kvs := m.names()
	if m.cfg.User == "" {
		kvs = append(kvs, pdu.KV{Key: "AuthMethod", Value: "None"})
		m.state = lsAuthMethodSent
		return step{transit: true, csg: pdu.StageSecurity, nsg: pdu.StageOperational, kvs: kvs}
	}
	kvs = append(kvs, pdu.KV{Key: "AuthMethod", Value: "CHAP"})
	m.state = lsAuthMethodSent
	return step{csg: pdu.StageSecurity, nsg: pdu.StageOperational, kvs: kvs}
}

// next consumes a login response and returns the next request, or done
// when the target moved to full-feature phase.
func (m *loginMachine) next(rsp *pdu.LoginResponse, data []byte) (st step, done bool, err error) {
	if rsp.StatusClass != 0 {
		return st, false, newLoginError(rsp.StatusClass, rsp.StatusDetail)
	}
	if rsp.VersionActive != 0 {
		return st, false, fmt.Errorf("%w: target chose iSCSI version %d", ErrProtocol, rsp.VersionActive)
	}
	if rsp.Continue {
		// More text follows: ask for it with an empty request.
		if len(m.partial)+len(data) > 64<<10 {
			return st, false, fmt.Errorf("%w: login text beyond 64 KiB", ErrProtocol)
		}
		m.partial = append(m.partial, data...)
		return step{csg: m.stage, nsg: m.stage}, false, nil
	}
	if m.partial != nil {
		data = append(m.partial, data...)
		m.partial = nil
	}
	kvs, err := pdu.ParseText(data)
	if err != nil {
		return st, false, fmt.Errorf("%w: login response text: %w", ErrProtocol, err)
	}
	if rsp.CSG != m.stage {
		return st, false, fmt.Errorf("%w: login response in stage %d, expected %d", ErrProtocol, rsp.CSG, m.stage)
	}
	switch m.stage {
	case pdu.StageSecurity:
		return m.security(rsp, kvs)
	case pdu.StageOperational:
		return m.operational(rsp, kvs)
	}
	return st, false, fmt.Errorf("%w: login in unexpected stage %d", ErrProtocol, m.stage)
}

func (m *loginMachine) security(rsp *pdu.LoginResponse, kvs []pdu.KV) (step, bool, error) {
	if am, ok := pdu.Lookup(kvs, "AuthMethod"); ok {
		want := "None"
		if m.cfg.User != "" {
			want = "CHAP"
		}
		if am != want {
			if am == "Reject" || am == "None" && want == "CHAP" {
				return step{}, false, fmt.Errorf("%w: target does not accept AuthMethod=%s (answered %q)", ErrAuthFailed, want, am)
			}
			return step{}, false, fmt.Errorf("%w: target chose AuthMethod=%q", ErrAuthFailed, am)
		}
	}
	switch m.state {
	case lsAuthMethodSent:
		if m.cfg.User == "" {
			if rsp.Transit {
				return m.enterOperational(rsp)
			}
			// The target wants another security round without auth:
			// repeat the transit request.
			return step{transit: true, csg: pdu.StageSecurity, nsg: pdu.StageOperational}, false, nil
		}
		m.state = lsChapASent
		return step{csg: pdu.StageSecurity, nsg: pdu.StageOperational, kvs: []pdu.KV{{Key: "CHAP_A", Value: chapMD5}}}, false, nil
	case lsChapASent:
		alg, _ := pdu.Lookup(kvs, "CHAP_A")
		if alg != chapMD5 {
			return step{}, false, fmt.Errorf("%w: target chose CHAP_A=%q, only MD5 (5) is supported", ErrAuthFailed, alg)
		}
		idS, ok1 := pdu.Lookup(kvs, "CHAP_I")
		chS, ok2 := pdu.Lookup(kvs, "CHAP_C")
		if !ok1 || !ok2 {
			return step{}, false, fmt.Errorf("%w: CHAP challenge without CHAP_I or CHAP_C", ErrProtocol)
		}
		id, err := parseNum("CHAP_I", idS, 0, 255)
		if err != nil {
			return step{}, false, err
		}
		ch, err := decodeCHAPBinary(chS)
		if err != nil {
			return step{}, false, err
		}
		if len(ch) == 0 || len(ch) > 1024 {
			return step{}, false, fmt.Errorf("%w: CHAP challenge of %d bytes", ErrProtocol, len(ch))
		}
		out := []pdu.KV{
			{Key: "CHAP_N", Value: m.cfg.User},
			{Key: "CHAP_R", Value: encodeCHAPBinary(chapResponse(byte(id), m.cfg.Secret, ch))},
		}
		if m.cfg.TargetUser != "" {
			var b [17]byte
			if _, err := m.randRead(b[:]); err != nil {
				return step{}, false, fmt.Errorf("iscsi: CHAP challenge: %w", err)
			}
			m.myID, m.myChallenge = b[0], b[1:]
			out = append(out, pdu.KV{Key: "CHAP_I", Value: fmt.Sprint(m.myID)},
				pdu.KV{Key: "CHAP_C", Value: encodeCHAPBinary(m.myChallenge)})
		}
		m.state = lsChapRSent
		return step{transit: true, csg: pdu.StageSecurity, nsg: pdu.StageOperational, kvs: out}, false, nil
	case lsChapRSent:
		if m.cfg.TargetUser != "" {
			n, okN := pdu.Lookup(kvs, "CHAP_N")
			r, okR := pdu.Lookup(kvs, "CHAP_R")
			if !okN || !okR {
				return step{}, false, fmt.Errorf("%w: target did not answer the mutual CHAP challenge", ErrAuthFailed)
			}
			if n != m.cfg.TargetUser {
				return step{}, false, fmt.Errorf("%w: target named itself %q, expected %q", ErrAuthFailed, n, m.cfg.TargetUser)
			}
			got, err := decodeCHAPBinary(r)
			if err != nil {
				return step{}, false, err
			}
			if !chapVerify(m.myID, m.cfg.TargetSecret, m.myChallenge, got) {
				return step{}, false, fmt.Errorf("%w: target's mutual CHAP response is wrong", ErrAuthFailed)
			}
		}
		if !rsp.Transit {
			return step{}, false, fmt.Errorf("%w: target did not leave the security stage after CHAP", ErrProtocol)
		}
		return m.enterOperational(rsp)
	}
	return step{}, false, fmt.Errorf("%w: unexpected security-stage response", ErrProtocol)
}

func (m *loginMachine) enterOperational(rsp *pdu.LoginResponse) (step, bool, error) {
	if rsp.NSG == pdu.StageFullFeature {
		// Allowed: the target skipped the operational stage; defaults hold.
		m.state = lsDone
		return step{}, true, nil
	}
	if rsp.NSG != pdu.StageOperational {
		return step{}, false, fmt.Errorf("%w: target moved to stage %d after security", ErrProtocol, rsp.NSG)
	}
	m.stage = pdu.StageOperational
	m.state = lsOperational
	return step{transit: true, csg: pdu.StageOperational, nsg: pdu.StageFullFeature, kvs: m.neg.offer(m.cfg)}, false, nil
}

func (m *loginMachine) operational(rsp *pdu.LoginResponse, kvs []pdu.KV) (step, bool, error) {
	reply, err := m.neg.apply(m.cfg, kvs)
	if err != nil {
		return step{}, false, err
	}
	if rsp.Transit {
		if rsp.NSG != pdu.StageFullFeature {
			return step{}, false, fmt.Errorf("%w: target moved to stage %d from operational", ErrProtocol, rsp.NSG)
		}
		if len(reply) > 0 {
			return step{}, false, fmt.Errorf("%w: target left login while offering %v", ErrProtocol, reply[0].Key)
		}
		m.state = lsDone
		return step{}, true, nil
	}
	return step{transit: true, csg: pdu.StageOperational, nsg: pdu.StageFullFeature, kvs: reply}, false, nil
}
