// Package storedlm lets the store take its locks from the lock manager: it
// adapts a dlm.Node to store.Locker. Store locks are named resources; PR
// and EX map to the DLM's modes of the same names, Try and Recovery to its
// options, and the value block, blocking callback, fencing token and Use
// pass straight through.
//
//	locks := storedlm.New(node)
//	st, err := store.Open(ctx, store.DefaultConfig(volume, slot, locks))
package storedlm

import (
	"context"
	"errors"
	"fmt"

	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/store"
)

// New returns a store.Locker that asks n for its locks.
func New(n *dlm.Node) store.Locker { return locker{n} }

type locker struct{ n *dlm.Node }

func (l locker) Lock(ctx context.Context, name string, mode store.LockMode, opts store.LockOptions) (store.Lock, error) {
	var m dlm.Mode
	switch mode {
	case store.Shared:
		m = dlm.PR
	case store.Exclusive:
		m = dlm.EX
	default:
		return nil, fmt.Errorf("storedlm: lock %s in unknown mode %d", name, mode)
	}
	var o []dlm.Option
	if opts.Try {
		o = append(o, dlm.Try())
	}
	if opts.Recovery {
		o = append(o, dlm.Recovery())
	}
	lk, err := l.n.Acquire(ctx, dlm.Named(name), m, o...)
	if err != nil {
		return nil, mapErr(err)
	}
	return &lock{lk, mode}, nil
}

// Orphaned reports whether a dead node still holds name in a mode that
// conflicts with mode (store.OrphanReporter).
func (l locker) Orphaned(name string, mode store.LockMode) bool {
	m := dlm.EX
	if mode == store.Shared {
		m = dlm.PR
	}
	return l.n.Orphaned(dlm.Named(name), m)
}

// Holders lists who holds name as "owner mode" with "orphan" for a dead
// node's grant (store.HolderReporter), from this node's view of the lock
// table.
func (l locker) Holders(name string) []string {
	res := dlm.Named(name)
	var out []string
	for _, li := range l.n.Locks() {
		if !li.Held || li.Resource != res {
			continue
		}
		s := li.Owner.String() + " " + li.Granted.String()
		if li.Orphan {
			s += " orphan"
		}
		out = append(out, s)
	}
	return out
}

func mapErr(err error) error {
	switch {
	case errors.Is(err, dlm.ErrWouldBlock):
		return fmt.Errorf("%w: %w", store.ErrWouldBlock, err)
	case errors.Is(err, dlm.ErrLeaseLost), errors.Is(err, dlm.ErrClosed):
		return fmt.Errorf("%w: %w", store.ErrFenced, err)
	}
	return err
}

type lock struct {
	l    *dlm.Lock
	mode store.LockMode
}

func (l *lock) Mode() store.LockMode      { return l.mode }
func (l *lock) Token() uint64             { return uint64(l.l.Token()) }
func (l *lock) LVB() ([]byte, bool)       { return l.l.LVB() }
func (l *lock) SetLVB(b []byte) error     { return l.l.SetLVB(b) }
func (l *lock) Blocking() <-chan struct{} { return l.l.Blocking() }
func (l *lock) Use() error                { return mapErr(l.l.Use()) }
func (l *lock) Release() error            { return l.l.Release() }
