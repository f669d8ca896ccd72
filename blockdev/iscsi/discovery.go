package iscsi

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"

	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
)

// TargetInfo is one target a portal announces through SendTargets.
type TargetInfo struct {
	Name string
	// Addresses are "host:port,tpgt" entries as the target sent them.
	Addresses []string
}

// Discover opens a discovery session to cfg.Portal and returns the targets
// it announces (SendTargets=All). cfg.Target is ignored.
func Discover(ctx context.Context, cfg Config) ([]TargetInfo, error) {
	cfg.Target = ""
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nc, err := dial(ctx, &cfg)
	if err != nil {
		return nil, fmt.Errorf("iscsi: connect to %s: %w", cfg.Portal, err)
	}
	defer nc.Close()
	isid := cfg.ISID
	if isid == [6]byte{} {
		_, _ = rand.Read(isid[1:])
		isid[0] = 0x80
	}
	c := newConn(&cfg, nc, isid)
	if err := c.login(ctx, true); err != nil {
		return nil, fmt.Errorf("iscsi: discovery login at %s: %w", cfg.Portal, err)
	}
	deadline := c.clk.Now().Add(cfg.CommandTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	text, err := c.sendTargets()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	// Logout politely; a failure here does not spoil the answer.
	var h pdu.BHS
	lo := pdu.LogoutRequest{Reason: pdu.LogoutSession, ITT: 2, CmdSN: c.win.cmdSN, ExpStatSN: c.win.expStatSN}
	lo.Encode(&h)
	if c.writePDU(&h, nil) == nil {
		if rh, err := pdu.ReadHeader(c.br, c.dg, 64<<10); err == nil {
			_ = pdu.Discard(c.br, rh.DataLen(), c.dg)
		}
	}
	return parseSendTargets(text)
}

// sendTargets runs the SendTargets text exchange on a logged-in discovery
// connection, synchronously.
func (c *conn) sendTargets() ([]byte, error) {
	const itt = 1
	kvs := pdu.EncodeText([]pdu.KV{{Key: "SendTargets", Value: "All"}})
	ttt := uint32(pdu.ReservedTag)
	var all []byte
	for round := 0; round < 64; round++ {
		req := pdu.TextRequest{Final: true, ITT: itt, TTT: ttt, CmdSN: c.win.cmdSN, ExpStatSN: c.win.expStatSN}
		var h pdu.BHS
		req.Encode(&h)
		if err := c.writePDU(&h, kvs); err != nil {
			return nil, fmt.Errorf("iscsi: SendTargets: %w", err)
		}
		kvs = nil
		rh, err := pdu.ReadHeader(c.br, c.dg, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("iscsi: SendTargets: %w", err)
		}
		p, err := pdu.ParseTarget(&rh)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		data := make([]byte, rh.DataLen())
		if err := pdu.ReadData(c.br, data, c.dg); err != nil {
			return nil, fmt.Errorf("iscsi: SendTargets: %w", err)
		}
		switch p := p.(type) {
		case *pdu.TextResponse:
			c.win.status(p.StatSN)
			c.win.update(p.ExpCmdSN, p.MaxCmdSN)
			all = append(all, data...)
			if len(all) > 4<<20 {
				return nil, fmt.Errorf("%w: SendTargets answer beyond 4 MiB", ErrProtocol)
			}
			if p.Final {
				return all, nil
			}
			ttt = p.TTT
		case *pdu.Reject:
			return nil, fmt.Errorf("%w: SendTargets: reason 0x%02x", ErrRejected, p.Reason)
		case *pdu.NOPIn, *pdu.AsyncMessage:
			continue
		default:
			return nil, fmt.Errorf("%w: %v in answer to SendTargets", ErrProtocol, rh.Opcode())
		}
	}
	return nil, fmt.Errorf("%w: SendTargets did not finish in 64 rounds", ErrProtocol)
}

// parseSendTargets groups TargetName= and TargetAddress= pairs.
func parseSendTargets(text []byte) ([]TargetInfo, error) {
	kvs, err := pdu.ParseText(text)
	if err != nil {
		return nil, fmt.Errorf("%w: SendTargets answer: %w", ErrProtocol, err)
	}
	var out []TargetInfo
	for _, kv := range kvs {
		switch kv.Key {
		case "TargetName":
			out = append(out, TargetInfo{Name: kv.Value})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, fmt.Errorf("%w: TargetAddress before any TargetName", ErrProtocol)
			}
			out[len(out)-1].Addresses = append(out[len(out)-1].Addresses, kv.Value)
		}
	}
	return out, nil
}

// PortalOf returns the host:port of a SendTargets address "host:port,tpgt".
func PortalOf(addr string) string {
	a, _, _ := strings.Cut(addr, ",")
	return a
}
