package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/internal/keys"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseLost: the incarnation's lease expired or could not be renewed
// before the self-fence deadline. Not retriable on this session: the node
// must register again as a new incarnation.
var ErrLeaseLost = errors.New("lease lost")

// ErrNameTaken: another live incarnation is registered under the name.
// Retriable once that incarnation is gone.
var ErrNameTaken = errors.New("member name taken by a live incarnation")

var errSessionClosed = errors.New("session closed")

// Member kinds and the member record are defined with the member key in
// internal/keys (keys.KindNode, keys.KindClient, keys.MemberRecord).

// SessionConfig says how to register an incarnation.
type SessionConfig struct {
	Client *clientv3.Client
	// Prefix is the cluster's key prefix (Config.Prefix()).
	Prefix string
	// Info describes the member; Name and Kind are required, Incarnation
	// and Lease are filled in.
	Info keys.MemberRecord
	// TTL, KeepAliveInterval, KeepAliveTimeout and SelfFenceMargin: see
	// LeaseConfig.
	TTL, KeepAliveInterval, KeepAliveTimeout, SelfFenceMargin time.Duration
	// TakeOver lets the new incarnation revoke the lease of an older one
	// with the same name. Only safe when the caller knows the older one is
	// gone (shoald holds its data directory's lock, so an older shoald of
	// the same directory is dead).
	TakeOver bool
	// afterRevoke, when set (tests), runs after Register revoked an older
	// incarnation's lease and before it tries to register again.
	afterRevoke func()
	// TimingAdvice is what the operator can change when renewals run
	// late (Config.leaseAdvice: the timing profile, the lease TTL); it
	// is logged with a lease lost, or nearly lost, to late renewals.
	TimingAdvice string
	Clock        clock.Clock
	Logger       hclog.Logger
}

// Session is one registered incarnation: its lease, kept alive, and its
// member key. It implements dlm.Member.
type Session struct {
	cfg       SessionConfig
	clk       clock.Clock
	log       hclog.Logger
	info      keys.MemberRecord
	key       string
	createRev int64
	// replaced are the older incarnations whose leases Register revoked
	// to take the name over (TakeOver), oldest first.
	replaced []keys.MemberRecord

	// renew renews the lease once and returns the TTL granted, in seconds.
	renew func(ctx context.Context, id clientv3.LeaseID) (int64, error)

	mu       sync.Mutex
	deadline leaseDeadline
	health   *renewalWatch
	lostErr  error
	lost     chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

// NewIncarnation returns a fresh incarnation id.
func NewIncarnation() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newSession(cfg SessionConfig) *Session {
	now := time.Now()
	if cfg.Clock != nil {
		now = cfg.Clock.Now()
	}
	return &Session{
		health:   newRenewalWatch(now, cfg.KeepAliveInterval, cfg.TTL, cfg.TimingAdvice),
		cfg:      cfg,
		clk:      cfg.Clock,
		log:      cfg.Logger,
		key:      keys.Of(cfg.Prefix).Member(cfg.Info.Name),
		deadline: leaseDeadline{margin: cfg.SelfFenceMargin},
		lost:     make(chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// Register grants a lease, writes the member key attached to it and starts
// keeping the lease alive.
func Register(ctx context.Context, cfg SessionConfig) (*Session, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Info.Name == "" || cfg.Info.Kind == "" {
		return nil, errors.New("session: member name and kind are required")
	}
	if cfg.TTL < time.Second || cfg.KeepAliveInterval <= 0 || cfg.KeepAliveTimeout <= 0 || cfg.SelfFenceMargin < 0 {
		return nil, fmt.Errorf("session: bad timing (ttl %s, keepalive %s/%s, margin %s)", cfg.TTL, cfg.KeepAliveInterval, cfg.KeepAliveTimeout, cfg.SelfFenceMargin)
	}
	s := newSession(cfg)
	s.renew = func(ctx context.Context, id clientv3.LeaseID) (int64, error) {
		resp, err := cfg.Client.KeepAliveOnce(ctx, id)
		if err != nil {
			return 0, err
		}
		return resp.TTL, nil
	}
	info := cfg.Info
	info.Incarnation = NewIncarnation()
	info.Started = s.clk.Now().UTC()
	sent := s.clk.Now()
	grant, err := cfg.Client.Grant(ctx, int64(cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("session: grant lease: %w", err)
	}
	info.Lease = int64(grant.ID)
	s.deadline.renewed(sent, time.Duration(grant.TTL)*time.Second)
	s.health.confirmed(s.clk.Now())
	s.info = info
	val, _ := json.Marshal(info)

	for attempt := 0; attempt < 3; attempt++ {
		resp, err := cfg.Client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(s.key), "=", 0)).
			Then(clientv3.OpPut(s.key, string(val), clientv3.WithLease(grant.ID))).
			Else(clientv3.OpGet(s.key)).
			Commit()
		if err != nil {
			cfg.Client.Revoke(context.Background(), grant.ID)
			return nil, fmt.Errorf("session: register %s: %w", s.key, err)
		}
		if resp.Succeeded {
			s.createRev = resp.Header.Revision
			go s.keepAlive()
			s.log.Info("registered", "incarnation", info.Incarnation, "lease", fmt.Sprintf("%x", grant.ID), "ttl", cfg.TTL)
			return s, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue
		}
		var old keys.MemberRecord
		json.Unmarshal(kvs[0].Value, &old)
		if !cfg.TakeOver {
			cfg.Client.Revoke(context.Background(), grant.ID)
			return nil, fmt.Errorf("%w: %s is held by incarnation %s", ErrNameTaken, cfg.Info.Name, old.Incarnation)
		}
		s.log.Info("taking over from older incarnation", "old_incarnation", old.Incarnation, "old_lease", fmt.Sprintf("%x", old.Lease))
		old.Name = cfg.Info.Name
		s.replaced = append(s.replaced, old)
		if _, err := cfg.Client.Revoke(ctx, clientv3.LeaseID(old.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			cfg.Client.Revoke(context.Background(), grant.ID)
			return nil, fmt.Errorf("session: revoke older incarnation's lease: %w", err)
		}
		if cfg.afterRevoke != nil {
			cfg.afterRevoke()
		}
	}
	cfg.Client.Revoke(context.Background(), grant.ID)
	return nil, fmt.Errorf("%w: %s keeps being re-registered by someone else", ErrNameTaken, cfg.Info.Name)
}

// keepAlive renews the lease every interval and retries a failed renewal
// at once, until the lease is lost or the session closed. It declares the
// lease lost the moment the self-fence deadline passes, whatever etcd says.
func (s *Session) keepAlive() {
	defer close(s.done)
	tick := s.clk.NewTicker(s.cfg.KeepAliveInterval)
	defer tick.Stop()
	guard := s.clk.NewTimer(s.Deadline().Sub(s.clk.Now()))
	defer guard.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-guard.C():
			if !s.Valid() {
				s.markLost(fmt.Errorf("%w: no renewal confirmed before the self-fence deadline", ErrLeaseLost))
				return
			}
			guard.Reset(s.Deadline().Sub(s.clk.Now()))
		case <-tick.C():
			// A stop and a tick may be ready together: stop first, so
			// a closing session sends no more renewals.
			select {
			case <-s.stop:
				return
			default:
			}
			s.mu.Lock()
			s.health.tick(s.clk.Now())
			s.mu.Unlock()
			err := s.renewOnce()
			s.mu.Lock()
			s.health.returned(s.clk.Now())
			s.mu.Unlock()
			if err != nil {
				if errors.Is(err, ErrLeaseLost) {
					s.markLost(err)
					return
				}
				s.log.Warn("lease renewal failed", "error", err, "trust_left", s.TrustLeft())
			}
			guard.Reset(s.Deadline().Sub(s.clk.Now()))
		}
	}
}

func (s *Session) renewOnce() error {
	// Check first: a node that was paused past its deadline must not
	// resurrect its trust with a renewal that happens to succeed.
	if !s.Valid() {
		return fmt.Errorf("%w: self-fence deadline passed", ErrLeaseLost)
	}
	sent := s.clk.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.KeepAliveTimeout)
	defer cancel()
	ttl, err := s.renew(ctx, s.LeaseID())
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("%w: etcd no longer knows lease %x", ErrLeaseLost, s.info.Lease)
		}
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("%w: lease %x expired", ErrLeaseLost, s.info.Lease)
	}
	s.mu.Lock()
	if !s.deadline.valid(s.clk.Now()) {
		s.mu.Unlock()
		return fmt.Errorf("%w: renewal confirmed after the self-fence deadline", ErrLeaseLost)
	}
	s.deadline.renewed(sent, time.Duration(ttl)*time.Second)
	warn := s.health.confirmed(s.clk.Now())
	s.mu.Unlock()
	if warn != nil {
		s.log.Warn("lease nearly lost: a renewal came late", append([]any{"incarnation", s.info.Incarnation}, warn...)...)
	}
	return nil
}

func (s *Session) markLost(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lostErr != nil {
		return
	}
	s.lostErr = err
	close(s.lost)
	if errors.Is(err, errSessionClosed) {
		s.log.Info("session closed", "incarnation", s.info.Incarnation)
		return
	}
	s.log.Error("lease lost: no longer acting as a member", append([]any{"incarnation", s.info.Incarnation, "error", err}, s.health.fields(s.clk.Now())...)...)
}

// Close ends the session. With leave, it first marks the member key as
// leaving (so others see a departure, not a death) and then revokes the
// lease; otherwise it only stops renewing.
func (s *Session) Close(ctx context.Context, leave bool) error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	var err error
	if leave && s.Valid() {
		info := s.info
		info.Leaving = true
		val, _ := json.Marshal(info)
		_, err = s.cfg.Client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(s.key), "=", s.createRev)).
			Then(clientv3.OpPut(s.key, string(val), clientv3.WithLease(s.LeaseID()))).
			Commit()
		if _, rerr := s.cfg.Client.Revoke(ctx, s.LeaseID()); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) && err == nil {
			err = rerr
		}
	}
	s.markLost(fmt.Errorf("%w: %w", ErrLeaseLost, errSessionClosed))
	return err
}

// Abandon gives the incarnation up at once, as if its lease were lost:
// renewals stop, Lost is closed, and the node registers again as a new
// incarnation. For when the cluster is known to be recovering this one.
func (s *Session) Abandon(why error) {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.markLost(fmt.Errorf("%w: abandoned: %w", ErrLeaseLost, why))
}

// Replaced are the older incarnations of this node whose leases Register
// revoked to take the name over (SessionConfig.TakeOver), oldest first;
// none, usually, and one after a restart. Their member keys vanished at
// once, perhaps before any node's member view had them, so no one may have
// seen them go down: their recoveries are the new incarnation's to ask
// for.
func (s *Session) Replaced() []keys.MemberRecord {
	return append([]keys.MemberRecord(nil), s.replaced...)
}

// Name is the member's name.
func (s *Session) Name() string { return s.info.Name }

// Incarnation identifies this registration.
func (s *Session) Incarnation() string { return s.info.Incarnation }

// LeaseID is the incarnation's lease.
func (s *Session) LeaseID() clientv3.LeaseID { return clientv3.LeaseID(s.info.Lease) }

// MemberKey is the key attached to the lease.
func (s *Session) MemberKey() string { return s.key }

// MemberKeyRevision is the create revision of the member key; a
// comparison on it proves a write comes from this incarnation.
func (s *Session) MemberKeyRevision() int64 { return s.createRev }

// Info is what the member key says.
func (s *Session) Info() keys.MemberRecord { return s.info }

// Deadline is the self-fence deadline on the local clock.
func (s *Session) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline.deadline
}

// Valid reports whether the lease may still be trusted now.
func (s *Session) Valid() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lostErr == nil && s.deadline.valid(s.clk.Now())
}

// TrustLeft is how long the lease may still be trusted.
func (s *Session) TrustLeft() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lostErr != nil {
		return 0
	}
	return s.deadline.left(s.clk.Now())
}

// Lost is closed once the lease is lost or the session closed.
func (s *Session) Lost() <-chan struct{} { return s.lost }

// Err is why the session was lost, or nil.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lostErr
}
