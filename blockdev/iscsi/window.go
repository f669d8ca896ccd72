package iscsi

// window tracks the command sequence numbers of a session (RFC 7143
// section 4.2.2.1): the next CmdSN to give a non-immediate command, and
// the ExpCmdSN/MaxCmdSN range the target will accept. It is plain state,
// driven by the connection under its lock.
type window struct {
	cmdSN    uint32 // next CmdSN to assign
	expCmdSN uint32
	maxCmdSN uint32
	// expStatSN is the next StatSN the initiator expects.
	expStatSN uint32
}

// snLess compares serial numbers (RFC 1982, 32 bits).
func snLess(a, b uint32) bool { return a != b && int32(a-b) < 0 }

// snLE is a <= b in serial arithmetic.
func snLE(a, b uint32) bool { return a == b || snLess(a, b) }

// open reports whether a non-immediate command may be sent now.
func (w *window) open() bool { return snLE(w.cmdSN, w.maxCmdSN) }

// take assigns the next CmdSN to a non-immediate command.
func (w *window) take() uint32 {
	sn := w.cmdSN
	w.cmdSN++
	return sn
}

// update applies ExpCmdSN/MaxCmdSN from a target PDU. Per the RFC, values
// are ignored when MaxCmdSN < ExpCmdSN-1 and only move forward. It reports
// whether the window grew.
func (w *window) update(exp, max uint32) bool {
	if snLess(max, exp-1) {
		return false
	}
	grew := false
	if snLess(w.expCmdSN, exp) {
		w.expCmdSN = exp
	}
	if snLess(w.maxCmdSN, max) {
		w.maxCmdSN = max
		grew = true
	}
	return grew
}

// status records a StatSN the target sent; the initiator acknowledges it
// by sending StatSN+1 as ExpStatSN.
func (w *window) status(statSN uint32) {
	if snLE(w.expStatSN, statSN) {
		w.expStatSN = statSN + 1
	}
}
