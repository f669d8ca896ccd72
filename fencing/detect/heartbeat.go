package detect

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A heartbeat datagram:
//
//	"SHB1" | u8 len | name | u8 len | incarnation | u64 sequence (big endian)
const heartbeatMagic = "SHB1"

// MaxHeartbeat is the largest valid heartbeat datagram.
const MaxHeartbeat = len(heartbeatMagic) + 1 + 255 + 1 + 255 + 8

// ErrBadHeartbeat: a datagram is not a well-formed heartbeat. It is
// dropped; nothing to retry.
var ErrBadHeartbeat = errors.New("detect: malformed heartbeat")

// Heartbeat is one heartbeat message.
type Heartbeat struct {
	From Peer
	Seq  uint64
}

// MarshalBinary encodes h.
func (h Heartbeat) MarshalBinary() ([]byte, error) {
	if h.From.Name == "" || len(h.From.Name) > 255 || len(h.From.Incarnation) > 255 {
		return nil, fmt.Errorf("%w: name %d bytes, incarnation %d bytes", ErrBadHeartbeat, len(h.From.Name), len(h.From.Incarnation))
	}
	b := make([]byte, 0, len(heartbeatMagic)+2+len(h.From.Name)+len(h.From.Incarnation)+8)
	b = append(b, heartbeatMagic...)
	b = append(b, byte(len(h.From.Name)))
	b = append(b, h.From.Name...)
	b = append(b, byte(len(h.From.Incarnation)))
	b = append(b, h.From.Incarnation...)
	return binary.BigEndian.AppendUint64(b, h.Seq), nil
}

// UnmarshalBinary decodes a datagram, rejecting anything malformed.
func (h *Heartbeat) UnmarshalBinary(b []byte) error {
	if len(b) < len(heartbeatMagic)+2+8 || string(b[:len(heartbeatMagic)]) != heartbeatMagic {
		return fmt.Errorf("%w: bad magic or too short (%d bytes)", ErrBadHeartbeat, len(b))
	}
	p := b[len(heartbeatMagic):]
	n := int(p[0])
	if n == 0 || len(p) < 1+n+1 {
		return fmt.Errorf("%w: bad name length", ErrBadHeartbeat)
	}
	name := string(p[1 : 1+n])
	p = p[1+n:]
	m := int(p[0])
	if len(p) != 1+m+8 {
		return fmt.Errorf("%w: bad length", ErrBadHeartbeat)
	}
	h.From = Peer{Name: name, Incarnation: string(p[1 : 1+m])}
	h.Seq = binary.BigEndian.Uint64(p[1+m:])
	return nil
}
