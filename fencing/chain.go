package fencing

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
)

// Method is one fencer in a Chain, with the name used in logs and errors.
type Method struct {
	Name   string
	Fencer Fencer
}

// Chain tries several fencing methods in order and succeeds as soon as one
// of them does: for example reservations first, then a power-switch agent.
type Chain struct {
	methods []Method
	log     hclog.Logger
}

// NewChain returns a chain over methods. A nil logger discards logs.
func NewChain(log hclog.Logger, methods ...Method) (*Chain, error) {
	if len(methods) == 0 {
		return nil, fmt.Errorf("fencing: chain: no methods")
	}
	for i, m := range methods {
		if m.Fencer == nil {
			return nil, fmt.Errorf("fencing: chain: methods[%d] (%q): Fencer is nil", i, m.Name)
		}
		if m.Name == "" {
			return nil, fmt.Errorf("fencing: chain: methods[%d]: Name is empty", i)
		}
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Chain{methods: append([]Method(nil), methods...), log: log}, nil
}

// Fence runs the methods in order until one succeeds. When none does, the
// error wraps ErrFenceFailed and every method's own error. A method that
// says this node itself was fenced (ErrFenced) or was asked to fence
// itself (ErrFenceSelf) stops the chain at once: no other method can make
// that right.
func (c *Chain) Fence(ctx context.Context, victim NodeRef) error {
	var errs []error
	for _, m := range c.methods {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		err := m.Fencer.Fence(ctx, victim)
		if err == nil {
			c.log.Info("victim fenced", "victim", victim.String(), "method", m.Name)
			return nil
		}
		c.log.Warn("fence method failed", "victim", victim.String(), "method", m.Name, "error", err)
		errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
		if errors.Is(err, ErrFenced) || errors.Is(err, ErrFenceSelf) {
			break
		}
	}
	return fmt.Errorf("%w: %s: every method failed: %w", ErrFenceFailed, victim, errors.Join(errs...))
}

// All is a fencer that succeeds only when every one of its methods does,
// run in order: for a volume whose legs are partly without reservations,
// preempting the key on the legs that have them is not enough, and the
// coordinator must also wait out the victim's lease.
type All struct {
	methods []Method
	log     hclog.Logger
}

// NewAll returns a fencer requiring every method. A nil logger discards.
func NewAll(log hclog.Logger, methods ...Method) (*All, error) {
	c, err := NewChain(log, methods...)
	if err != nil {
		return nil, fmt.Errorf("fencing: all: %w", err)
	}
	return &All{methods: c.methods, log: c.log}, nil
}

// Fence runs every method in order and stops at the first failure.
func (a *All) Fence(ctx context.Context, victim NodeRef) error {
	for _, m := range a.methods {
		if err := m.Fencer.Fence(ctx, victim); err != nil {
			a.log.Warn("fence method failed", "victim", victim.String(), "method", m.Name, "error", err)
			if errors.Is(err, ErrFenceFailed) {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
			return fmt.Errorf("%w: %s: %s: %w", ErrFenceFailed, victim, m.Name, err)
		}
	}
	return nil
}
