package iscsi

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/shoal-ha/shoal/blockdev/iscsi/internal/pdu"
)

// Params are the operational parameters in force on a connection after
// login (RFC 7143 section 13).
type Params struct {
	HeaderDigest, DataDigest bool
	// MaxXmitDataSegment is the target's MaxRecvDataSegmentLength: the
	// largest data segment this initiator may send.
	MaxXmitDataSegment int
	// MaxRecvDataSegment is what this initiator declared.
	MaxRecvDataSegment int
	MaxBurstLength     int
	FirstBurstLength   int
	InitialR2T         bool
	ImmediateData      bool
	MaxOutstandingR2T  int
	DataPDUInOrder     bool
	DataSeqInOrder     bool
	ErrorRecoveryLevel int
	DefaultTime2Wait   int
	DefaultTime2Retain int
	TargetAlias        string
	TargetPortalGroup  int
}

// defaultParams are the RFC defaults that hold for keys nobody negotiates.
func defaultParams() Params {
	return Params{
		MaxXmitDataSegment: 8192, MaxRecvDataSegment: 8192,
		MaxBurstLength: 262144, FirstBurstLength: 65536,
		InitialR2T: true, ImmediateData: true, MaxOutstandingR2T: 1,
		DataPDUInOrder: true, DataSeqInOrder: true,
		DefaultTime2Wait: 2, DefaultTime2Retain: 20,
	}
}

// negotiator runs the operational key exchange. It is plain state: login
// feeds it the target's keys and sends what it returns.
type negotiator struct {
	p       Params
	offered map[string]string
	// discovery sessions negotiate only a subset.
	discovery bool
}

func newNegotiator(cfg *Config, discovery bool) *negotiator {
	n := &negotiator{p: defaultParams(), offered: map[string]string{}, discovery: discovery}
	n.p.MaxRecvDataSegment = cfg.MaxRecvDataSegmentLength
	return n
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func digestOffer(on bool) string {
	if on {
		return "CRC32C,None"
	}
	return "None"
}

// offer returns the keys this initiator proposes in the operational stage.
func (n *negotiator) offer(cfg *Config) []pdu.KV {
	kvs := []pdu.KV{
		{Key: "HeaderDigest", Value: digestOffer(cfg.HeaderDigest)},
		{Key: "DataDigest", Value: digestOffer(cfg.DataDigest)},
		{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(cfg.MaxRecvDataSegmentLength)},
	}
	if !n.discovery {
		kvs = append(kvs,
			pdu.KV{Key: "MaxConnections", Value: "1"},
			pdu.KV{Key: "InitialR2T", Value: yesNo(cfg.InitialR2T)},
			pdu.KV{Key: "ImmediateData", Value: yesNo(cfg.ImmediateData)},
			pdu.KV{Key: "MaxBurstLength", Value: strconv.Itoa(cfg.MaxBurstLength)},
			pdu.KV{Key: "FirstBurstLength", Value: strconv.Itoa(cfg.FirstBurstLength)},
			pdu.KV{Key: "MaxOutstandingR2T", Value: "1"},
			pdu.KV{Key: "DataPDUInOrder", Value: "Yes"},
			pdu.KV{Key: "DataSequenceInOrder", Value: "Yes"},
			pdu.KV{Key: "DefaultTime2Wait", Value: "0"},
			pdu.KV{Key: "DefaultTime2Retain", Value: "0"},
		)
	}
	kvs = append(kvs, pdu.KV{Key: "ErrorRecoveryLevel", Value: "0"})
	// Until the target answers, the offers are also what holds: record
	// them so an answer of the same value needs no further round.
	for _, kv := range kvs {
		n.offered[kv.Key] = kv.Value
	}
	n.p.ImmediateData = cfg.ImmediateData
	n.p.InitialR2T = cfg.InitialR2T
	return kvs
}

// isUnset reports the special answers that leave a key at its default.
func isUnset(v string) bool {
	return v == "Irrelevant" || v == "NotUnderstood" || v == "Reject"
}

func parseNum(key, v string, lo, hi int) (int, error) {
	x, err := strconv.Atoi(v)
	if err != nil || x < lo || x > hi {
		return 0, fmt.Errorf("%w: %s=%q is not a number in %d..%d", ErrProtocol, key, v, lo, hi)
	}
	return x, nil
}

func parseBool(key, v string) (bool, error) {
	switch v {
	case "Yes":
		return true, nil
	case "No":
		return false, nil
	}
	return false, fmt.Errorf("%w: %s=%q is neither Yes nor No", ErrProtocol, key, v)
}

// apply takes the target's keys, updates the parameters and returns the
// answers this initiator owes for keys the target offered on its own.
func (n *negotiator) apply(cfg *Config, kvs []pdu.KV) ([]pdu.KV, error) {
	var reply []pdu.KV
	for _, kv := range kvs {
		k, v := kv.Key, kv.Value
		_, weOffered := n.offered[k]
		if isUnset(v) {
			continue
		}
		var err error
		switch k {
		case "HeaderDigest", "DataDigest":
			var on bool
			if weOffered {
				switch v {
				case "CRC32C":
					on = true
				case "None":
				default:
					return nil, fmt.Errorf("%w: %s=%q is not one of the offered values", ErrProtocol, k, v)
				}
				if on && n.offered[k] == "None" {
					return nil, fmt.Errorf("%w: target chose %s=CRC32C that was not offered", ErrProtocol, k)
				}
			} else {
				// The target offers a list: pick per our config.
				want := (k == "HeaderDigest" && cfg.HeaderDigest) || (k == "DataDigest" && cfg.DataDigest)
				on = want && strings.Contains(v, "CRC32C")
				if !on && !strings.Contains(v, "None") {
					return nil, fmt.Errorf("%w: target offers only %s=%s", ErrProtocol, k, v)
				}
				reply = append(reply, pdu.KV{Key: k, Value: map[bool]string{true: "CRC32C", false: "None"}[on]})
			}
			if k == "HeaderDigest" {
				n.p.HeaderDigest = on
			} else {
				n.p.DataDigest = on
			}
		case "MaxRecvDataSegmentLength":
			// Declarative: the target's receive limit is our send limit.
			n.p.MaxXmitDataSegment, err = parseNum(k, v, 512, 1<<24-1)
		case "MaxBurstLength":
			var x int
			if x, err = parseNum(k, v, 512, 1<<24-1); err == nil {
				n.p.MaxBurstLength = min(x, cfg.MaxBurstLength)
				if !weOffered {
					reply = append(reply, pdu.KV{Key: k, Value: strconv.Itoa(n.p.MaxBurstLength)})
				}
			}
		case "FirstBurstLength":
			var x int
			if x, err = parseNum(k, v, 512, 1<<24-1); err == nil {
				n.p.FirstBurstLength = min(x, cfg.FirstBurstLength)
				if !weOffered {
					reply = append(reply, pdu.KV{Key: k, Value: strconv.Itoa(n.p.FirstBurstLength)})
				}
			}
		case "InitialR2T":
			var b bool
			if b, err = parseBool(k, v); err == nil {
				n.p.InitialR2T = b || cfg.InitialR2T
				if !weOffered {
					reply = append(reply, pdu.KV{Key: k, Value: yesNo(n.p.InitialR2T)})
				}
			}
		case "ImmediateData":
			var b bool
			if b, err = parseBool(k, v); err == nil {
				n.p.ImmediateData = b && cfg.ImmediateData
				if !weOffered {
					reply = append(reply, pdu.KV{Key: k, Value: yesNo(n.p.ImmediateData)})
				}
			}
		case "MaxOutstandingR2T":
			// This initiator serves one R2T at a time per task.
			if _, err = parseNum(k, v, 1, 65535); err == nil {
				n.p.MaxOutstandingR2T = 1
				if !weOffered {
					reply = append(reply, pdu.KV{Key: k, Value: "1"})
				}
			}
		case "DataPDUInOrder", "DataSequenceInOrder":
			// The result is OR with this initiator's Yes: always in order.
			if _, err = parseBool(k, v); err == nil {
				if !weOffered {
					reply = append(reply, pdu.KV{Key: k, Value: "Yes"})
				}
			}
		case "ErrorRecoveryLevel":
			// Only level 0 (session recovery) is implemented.
			if _, err = parseNum(k, v, 0, 2); err == nil {
				n.p.ErrorRecoveryLevel = 0
				if !weOffered {
					reply = append(reply, pdu.KV{Key: k, Value: "0"})
				}
			}
		case "DefaultTime2Wait":
			n.p.DefaultTime2Wait, err = parseNum(k, v, 0, 3600)
			if err == nil && !weOffered {
				reply = append(reply, pdu.KV{Key: k, Value: v})
			}
		case "DefaultTime2Retain":
			n.p.DefaultTime2Retain, err = parseNum(k, v, 0, 3600)
			if err == nil && !weOffered {
				reply = append(reply, pdu.KV{Key: k, Value: v})
			}
		case "MaxConnections":
			if _, err = parseNum(k, v, 1, 65535); err == nil && !weOffered {
				reply = append(reply, pdu.KV{Key: k, Value: "1"})
			}
		case "TargetAlias":
			n.p.TargetAlias = v
		case "TargetPortalGroupTag":
			n.p.TargetPortalGroup, err = parseNum(k, v, 0, 65535)
		case "TargetAddress", "TargetName", "IFMarker", "OFMarker", "OFMarkInt", "IFMarkInt":
			if !weOffered && (k == "IFMarker" || k == "OFMarker") {
				reply = append(reply, pdu.KV{Key: k, Value: "No"})
			}
		default:
			if !weOffered && !strings.HasPrefix(k, "X-") && !strings.HasPrefix(k, "X#") {
				reply = append(reply, pdu.KV{Key: k, Value: "NotUnderstood"})
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if n.p.FirstBurstLength > n.p.MaxBurstLength {
		n.p.FirstBurstLength = n.p.MaxBurstLength
	}
	// A key answered once is settled: a repeat from the target is not a
	// new offer.
	for _, kv := range reply {
		n.offered[kv.Key] = kv.Value
	}
	return reply, nil
}
