package store

import (
	"context"
	"fmt"
)

// LockMode is the mode of a lock-manager lock as the store uses it.
type LockMode uint8

// Lock modes (the DLM's PR and EX).
const (
	// Shared is protected read (PR): read and cache; many holders.
	Shared LockMode = 1
	// Exclusive (EX): change; one holder.
	Exclusive LockMode = 2
)

func (m LockMode) String() string {
	switch m {
	case Shared:
		return "PR"
	case Exclusive:
		return "EX"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// LockOptions change how a lock is asked for.
type LockOptions struct {
	// Try fails at once with ErrWouldBlock instead of waiting.
	Try bool
	// Recovery asks for a recovery lock, granted over locks orphaned by a
	// dead node (only the recovery coordinator asks for these).
	Recovery bool
}

// Locker is the store's view of the lock manager: named locks in PR or EX
// with a fencing token, a value block and a blocking callback. The real
// lock manager (dlm.Node) satisfies it through the storedlm adapter;
// MemLocks is the in-memory twin for tests.
type Locker interface {
	// Lock waits (within ctx) for name in mode. The name is made of
	// letters, digits and . _ - / : only. Errors: ErrWouldBlock for a Try
	// that would wait, ErrFenced when the node may no longer lock, ctx's
	// error.
	Lock(ctx context.Context, name string, mode LockMode, opts LockOptions) (Lock, error)
}

// Lock is one grant of a Locker.
type Lock interface {
	// Mode is the mode granted.
	Mode() LockMode
	// Token is the fencing token of the grant; it grows with every grant
	// of the resource.
	Token() uint64
	// LVB is the lock value block as of the grant and whether it is valid
	// (it is not after an EX holder died without writing it back).
	LVB() ([]byte, bool)
	// SetLVB sets the value block (EX only); it is published when the
	// lock is released. At most 64 bytes.
	SetLVB(b []byte) error
	// Blocking is closed when another node waits for a conflicting mode:
	// the holder should finish, write back and release soon.
	Blocking() <-chan struct{}
	// Use checks, right before the holder touches what the lock guards,
	// that the node may still use its locks; ErrFenced otherwise.
	Use() error
	// Release gives the grant up.
	Release() error
}

// OrphanReporter is an optional ability of a Locker: Orphaned reports
// whether a dead node's grant on name that conflicts with mode is still
// held (an orphan, which only recovery requests are granted over until
// the recovery releases it). A request for such a lock waits until the
// recovery ends; the store does not leave it queued meanwhile, and a
// transaction holding other locks gives them up (Config.OrphanCheck). It
// must not block. MemLocks and the DLM adapter (storedlm) have it.
type OrphanReporter interface {
	Orphaned(name string, mode LockMode) bool
}

// HolderReporter is an optional ability of a Locker: Holders lists who
// holds name, as "owner mode" strings with "orphan" for a dead node's
// grant, for reports on a recovery that waits. It must not block.
type HolderReporter interface {
	Holders(name string) []string
}
