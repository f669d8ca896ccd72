package dlm

import (
	"fmt"
	"strings"
)

// Mode is a lock mode in the classic VMS / Linux DLM order.
type Mode uint8

// The six lock modes, from weakest to strongest.
const (
	NL Mode = iota // null: holds a place, conflicts with nothing
	CR             // concurrent read
	CW             // concurrent write
	PR             // protected read
	PW             // protected write
	EX             // exclusive
)

const numModes = 6

var modeNames = [numModes]string{"NL", "CR", "CW", "PR", "PW", "EX"}

// compat[a] is the set of modes (bit i = Mode i) compatible with a.
var compat = [numModes]uint8{
	NL: 0b111111,
	CR: 0b011111, // all but EX
	CW: 0b000111, // NL CR CW
	PR: 0b001011, // NL CR PR
	PW: 0b000011, // NL CR
	EX: 0b000001, // NL
}

// String returns the mode's short name.
func (m Mode) String() string {
	if m < numModes {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Valid reports whether m is one of the six modes.
func (m Mode) Valid() bool { return m < numModes }

// ParseMode reads a mode name (case-insensitive).
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if strings.EqualFold(s, n) {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("%w: %q (want one of NL, CR, CW, PR, PW, EX)", ErrBadMode, s)
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) {
	if !m.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrBadMode, uint8(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Compatible reports whether locks in modes a and b may be held at once on
// overlapping resources.
func Compatible(a, b Mode) bool {
	if !a.Valid() || !b.Valid() {
		return false
	}
	return compat[a]&(1<<b) != 0
}

// Covers reports whether holding a guarantees everything holding b does:
// every mode that conflicts with b also conflicts with a. A node holding a
// can hand b out to local users without asking the cluster.
func Covers(a, b Mode) bool {
	return a.Valid() && b.Valid() && compat[a]&^compat[b] == 0
}

// Sup returns the weakest mode that covers both a and b (the mode a lock
// must be converted to so that it serves both).
func Sup(a, b Mode) Mode {
	for m := NL; m < numModes; m++ {
		if Covers(m, a) && Covers(m, b) {
			return m
		}
	}
	return EX
}
