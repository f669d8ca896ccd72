package fencing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaseChecker reports whether a lease is still alive.
type LeaseChecker interface {
	// LeaseTTL returns the time the lease has left; found is false when
	// the lease no longer exists (it expired or was revoked).
	LeaseTTL(ctx context.Context, id int64) (ttl time.Duration, found bool, err error)
}

// EtcdLeases is the LeaseChecker over an etcd client.
type EtcdLeases struct{ Client *clientv3.Client }

// LeaseTTL asks etcd for the lease's remaining time to live.
func (e EtcdLeases) LeaseTTL(ctx context.Context, id int64) (time.Duration, bool, error) {
	resp, err := e.Client.TimeToLive(ctx, clientv3.LeaseID(id))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if resp.TTL < 0 {
		return 0, false, nil
	}
	return time.Duration(resp.TTL) * time.Second, true, nil
}

// LeaseConfig configures a LeaseFencer.
type LeaseConfig struct {
	// Leases answers whether the victim's lease is alive. Required.
	Leases LeaseChecker
	// Margin is the self-fence margin: how long after the lease is gone
	// the coordinator still waits, covering the victim's clock running
	// slow and a write already on its way. It must be at least the
	// margin by which nodes stop I/O before their lease ends.
	Margin time.Duration
	// Poll is the longest wait between two looks at the lease. Default 250ms.
	Poll time.Duration
	// MaxWait bounds one Fence call; the lease still alive after it gives
	// ErrLeaseAlive. Zero means wait as long as the context allows.
	MaxWait time.Duration
	// Clock measures the margin. Nil means the real clock.
	Clock clock.Clock
	// Logger receives progress lines. Nil discards.
	Logger hclog.Logger
}

// Validate says which field is wrong.
func (c LeaseConfig) Validate() error {
	switch {
	case c.Leases == nil:
		return fmt.Errorf("fencing: LeaseConfig.Leases is nil")
	case c.Margin < 0:
		return fmt.Errorf("fencing: LeaseConfig.Margin %v is negative", c.Margin)
	case c.Poll < 0:
		return fmt.Errorf("fencing: LeaseConfig.Poll %v is negative", c.Poll)
	case c.MaxWait < 0:
		return fmt.Errorf("fencing: LeaseConfig.MaxWait %v is negative", c.MaxWait)
	}
	return nil
}

// LeaseFencer is lease-only fencing, for legs without reservations: the
// victim is fenced once its etcd lease is gone and the self-fence margin
// has passed since, because a node stops all volume I/O by its own
// deadline, which comes before its lease can expire.
type LeaseFencer struct {
	cfg LeaseConfig
	clk clock.Clock
	log hclog.Logger
}

// NewLeaseFencer checks cfg and returns the fencer.
func NewLeaseFencer(cfg LeaseConfig) (*LeaseFencer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Poll == 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	f := &LeaseFencer{cfg: cfg, clk: cfg.Clock, log: cfg.Logger}
	if f.clk == nil {
		f.clk = clock.Real()
	}
	if f.log == nil {
		f.log = hclog.NewNullLogger()
	}
	return f, nil
}

// Fence waits until victim's lease is gone, then waits the margin.
func (f *LeaseFencer) Fence(ctx context.Context, victim NodeRef) error {
	if victim.LeaseID == 0 {
		return fmt.Errorf("%w: %s: victim has no lease ID", ErrFenceFailed, victim)
	}
	start := f.clk.Now()
	for {
		ttl, found, err := f.cfg.Leases.LeaseTTL(ctx, victim.LeaseID)
		if err != nil {
			return fmt.Errorf("%w: %s: lease %x: %w", ErrFenceFailed, victim, victim.LeaseID, err)
		}
		if !found {
			f.log.Info("victim lease gone, waiting self-fence margin", "victim", victim.String(), "margin", f.cfg.Margin)
			if err := f.sleep(ctx, f.cfg.Margin); err != nil {
				return fmt.Errorf("%w: %s: waiting margin: %w", ErrFenceFailed, victim, err)
			}
			return nil
		}
		wait := min(ttl, f.cfg.Poll)
		if wait <= 0 {
			wait = f.cfg.Poll
		}
		if f.cfg.MaxWait > 0 && f.clk.Since(start)+wait > f.cfg.MaxWait {
			return fmt.Errorf("%w: %s: lease %x has %v left after %v", ErrLeaseAlive, victim, victim.LeaseID, ttl, f.clk.Since(start))
		}
		f.log.Debug("victim lease alive", "victim", victim.String(), "ttl", ttl)
		if err := f.sleep(ctx, wait); err != nil {
			return fmt.Errorf("%w: %s: lease still alive: %w", ErrLeaseAlive, victim, err)
		}
	}
}

func (f *LeaseFencer) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := f.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
