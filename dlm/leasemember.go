package dlm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/keys"
	"github.com/shoal-ha/shoal/internal/lease"
)

// LeaseMemberConfig configures a LeaseMember.
type LeaseMemberConfig struct {
	Client *clientv3.Client
	// Prefix is the cluster key prefix (as in Config.Prefix); default
	// "/shoal/shoal", the daemon's default cluster.
	Prefix string
	// Name is the member's node name.
	Name string
	// TTL is the lease time-to-live, in whole seconds (etcd's unit).
	TTL time.Duration
	// Margin is subtracted from the lease expiry to get the self-fence
	// deadline, to absorb clock-rate differences between nodes.
	Margin time.Duration
	// KeepAlive is the interval between renewals; default TTL/8.
	KeepAlive time.Duration
	// KeepAliveTimeout bounds one renewal; default KeepAlive.
	KeepAliveTimeout time.Duration
	// ElectionTimeout is the etcd cluster's raft election timeout; default
	// lease.DefaultElection (etcd's default, 1 s). With KeepAlive,
	// KeepAliveTimeout and Margin it sets the shortest TTL allowed: the
	// rule the daemon's configuration follows (lease.Timing.Check), so
	// that one leader election cannot cost the member its lease.
	ElectionTimeout time.Duration
	// Clock measures the deadline. Defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to a null logger.
	Logger hclog.Logger
}

func (c *LeaseMemberConfig) setDefaults() {
	if c.KeepAlive == 0 {
		c.KeepAlive = c.TTL / 8
	}
	if c.KeepAliveTimeout == 0 {
		c.KeepAliveTimeout = c.KeepAlive
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = lease.DefaultElection
	}
}

// timing is the lease timing the configuration asks for.
func (c LeaseMemberConfig) timing() lease.Timing {
	return lease.Timing{TTL: c.TTL, KeepAlive: c.KeepAlive, KeepAliveTimeout: c.KeepAliveTimeout, Election: c.ElectionTimeout, Margin: c.Margin}
}

// Validate says which field is wrong, if any (defaults applied).
func (c LeaseMemberConfig) Validate() error {
	c.setDefaults()
	switch {
	case c.Client == nil:
		return errors.New("dlm: LeaseMemberConfig.Client is nil")
	case c.Name == "":
		return errors.New("dlm: LeaseMemberConfig.Name is empty")
	case checkName("member name", c.Name) != nil:
		return checkName("LeaseMemberConfig.Name", c.Name)
	case c.TTL < time.Second || c.TTL%time.Second != 0:
		return fmt.Errorf("dlm: LeaseMemberConfig.TTL %v must be a whole number of seconds, at least 1s", c.TTL)
	case c.Margin < 0 || c.Margin >= c.TTL/2:
		return fmt.Errorf("dlm: LeaseMemberConfig.Margin %v must be in [0, TTL/2)", c.Margin)
	}
	if err := c.timing().Check(); err != nil {
		return fmt.Errorf("dlm: LeaseMemberConfig.TTL: %w", err)
	}
	return nil
}

// LeaseMember is a minimal Member: a lease kept alive by its own loop and
// a member key attached to it. Tools such as lockctl and tests use it; the
// node daemon provides its own Member.
type LeaseMember struct {
	cfg      LeaseMemberConfig
	key      string
	inc      string
	lease    clientv3.LeaseID
	deadline atomic.Int64 // unix nanoseconds on cfg.Clock
	lost     chan struct{}
	lostOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// JoinAsClient registers a new incarnation named cfg.Name: it grants a
// lease, writes the member key and keeps the lease alive until Leave or
// until a keep-alive fails past the deadline.
func JoinAsClient(ctx context.Context, cfg LeaseMemberConfig) (*LeaseMember, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Prefix == "" {
		cfg.Prefix = keys.Cluster("shoal").Root()
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	m := &LeaseMember{cfg: cfg, key: newKeyspace(cfg.Prefix).members() + cfg.Name, inc: hex.EncodeToString(b[:]),
		lost: make(chan struct{}), done: make(chan struct{})}
	sent := cfg.Clock.Now()
	g, err := cfg.Client.Grant(ctx, int64(cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("dlm: granting lease: %w", err)
	}
	m.lease = g.ID
	m.deadline.Store(sent.Add(time.Duration(g.TTL)*time.Second - cfg.Margin).UnixNano())
	rec := keys.MemberRecord{Name: cfg.Name, Incarnation: m.inc, Lease: int64(g.ID), Kind: keys.KindClient}
	if _, err := cfg.Client.Put(ctx, m.key, mustJSON(rec), clientv3.WithLease(g.ID)); err != nil {
		return nil, fmt.Errorf("dlm: writing member key: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.keepAlive(lctx)
	return m, nil
}

func (m *LeaseMember) keepAlive(ctx context.Context) {
	defer close(m.done)
	clk := m.cfg.Clock
	t := clk.NewTicker(m.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		sent := clk.Now()
		cctx, cancel := context.WithTimeout(ctx, m.cfg.KeepAliveTimeout)
		resp, err := m.cfg.Client.KeepAliveOnce(cctx, m.lease)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			// The server renews from when it processes the request, which is
			// after sent: the lease cannot expire before sent+TTL.
			m.deadline.Store(sent.Add(time.Duration(resp.TTL)*time.Second - m.cfg.Margin).UnixNano())
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			return
		default:
			if err == nil {
				err = errors.New("lease expired")
			}
			m.cfg.Logger.Warn("lease keep-alive failed", "member", m.cfg.Name, "error", err)
			if errors.Is(err, rpctypes.ErrLeaseNotFound) || !clk.Now().Before(m.Deadline()) {
				m.markLost()
				return
			}
		}
	}
}

func (m *LeaseMember) markLost() { m.lostOnce.Do(func() { close(m.lost) }) }

// Name implements Member.
func (m *LeaseMember) Name() string { return m.cfg.Name }

// Incarnation implements Member.
func (m *LeaseMember) Incarnation() string { return m.inc }

// LeaseID implements Member.
func (m *LeaseMember) LeaseID() clientv3.LeaseID { return m.lease }

// MemberKey implements Member.
func (m *LeaseMember) MemberKey() string { return m.key }

// Deadline implements Member.
func (m *LeaseMember) Deadline() time.Time { return time.Unix(0, m.deadline.Load()) }

// Lost implements Member.
func (m *LeaseMember) Lost() <-chan struct{} { return m.lost }

// Owner is the incarnation as the lock table names it.
func (m *LeaseMember) Owner() Owner { return Owner{Node: m.cfg.Name, Incarnation: m.inc} }

// Leave stops the keep-alives and revokes the lease, which deletes the
// member key. Close the Node first so that its requests are withdrawn and
// nothing is left for recovery.
func (m *LeaseMember) Leave(ctx context.Context) error {
	m.cancel()
	<-m.done
	m.markLost()
	// Say it is a departure before the key goes, so no recovery is asked
	// for; only while the key is still this incarnation's.
	rec := keys.MemberRecord{Name: m.cfg.Name, Incarnation: m.inc, Lease: int64(m.lease), Kind: keys.KindClient, Leaving: true}
	if _, err := m.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(m.key), "=", m.lease)).
		Then(clientv3.OpPut(m.key, mustJSON(rec), clientv3.WithLease(m.lease))).
		Commit(); err != nil {
		return fmt.Errorf("dlm: marking the member key leaving: %w", err)
	}
	_, err := m.cfg.Client.Revoke(ctx, m.lease)
	return err
}

// Stop stops the keep-alives without revoking the lease, as a crash would.
func (m *LeaseMember) Stop() {
	m.cancel()
	<-m.done
}
