package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/internal/clock"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DeathRecord is what the coordinator writes to etcd for an incarnation it
// saw die: <prefix>/deaths/<name>/<incarnation>.
type DeathRecord struct {
	Name        string    `json:"name"`
	Incarnation string    `json:"incarnation"`
	Kind        string    `json:"kind"`
	Revision    int64     `json:"revision"`
	RecordedBy  string    `json:"recorded_by"`
	RecordedAt  time.Time `json:"recorded_at"`
}

// DeathsPrefix is where death records live.
func DeathsPrefix(prefix string) string { return prefix + "/deaths/" }

// CoordinatorPrefix is the election prefix of the recovery coordinator.
func CoordinatorPrefix(prefix string) string { return prefix + "/coordinator" }

// DeathHandler is called by the coordinator for each recorded death, in
// order. Later stages (fencing, journal replay, lock release) hang here.
// It runs while this node is coordinator and must be idempotent: a new
// coordinator may call it again for a death the old one did not finish.
type DeathHandler func(ctx context.Context, dead MemberInfo) error

// Coordinator campaigns for the recovery coordinator role on behalf of one
// session and, while it holds the role, records every death it learns of.
type Coordinator struct {
	cli     *clientv3.Client
	prefix  string
	log     hclog.Logger
	clk     clock.Clock
	handler DeathHandler

	mu       sync.Mutex
	sess     *Session
	ledger   *deathLedger
	leading  bool
	election *concurrency.Election
	kick     chan struct{}
}

// NewCoordinator prepares a coordinator; it campaigns for each incarnation
// of the node in turn (Run), and keeps the deaths it observed across them.
// handler may be nil.
func NewCoordinator(cli *clientv3.Client, prefix string, handler DeathHandler, clk clock.Clock, log hclog.Logger) *Coordinator {
	if clk == nil {
		clk = clock.Real()
	}
	return &Coordinator{
		cli: cli, prefix: prefix, log: log, clk: clk, handler: handler,
		ledger: newDeathLedger(1024), kick: make(chan struct{}, 1),
	}
}

// Observe feeds a member event (from the Watcher) to the coordinator.
func (c *Coordinator) Observe(ev Event) {
	if ev.Kind != NodeDown {
		return
	}
	c.mu.Lock()
	if c.sess != nil && ev.Member.Name == c.sess.Name() && ev.Member.Incarnation == c.sess.Incarnation() {
		c.mu.Unlock()
		return
	}
	c.ledger.observe(ev)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Leading reports whether this node is the coordinator now.
func (c *Coordinator) Leading() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leading && c.sess != nil && c.sess.Valid()
}

// Run campaigns for sess until ctx ends or the session is lost, and
// records deaths while leading.
func (c *Coordinator) Run(ctx context.Context, sess *Session) error {
	c.mu.Lock()
	c.sess = sess
	c.mu.Unlock()
	cs, err := concurrency.NewSession(c.cli, concurrency.WithLease(sess.LeaseID()), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	// The concurrency session shares the node's lease; Close would revoke
	// it, so it is only orphaned here and the node's session owns the lease.
	defer cs.Orphan()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	e := concurrency.NewElection(cs, CoordinatorPrefix(c.prefix))
	if err := e.Campaign(ctx, sess.Name()); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("coordinator: campaign: %w", err)
	}
	c.mu.Lock()
	c.leading, c.election = true, e
	c.mu.Unlock()
	c.log.Info("became recovery coordinator", "incarnation", sess.Incarnation())
	defer func() {
		c.mu.Lock()
		c.leading = false
		c.mu.Unlock()
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		if sess.Valid() {
			e.Resign(rctx)
		}
		c.log.Info("no longer recovery coordinator")
	}()
	retry := c.clk.NewTicker(500 * time.Millisecond)
	defer retry.Stop()
	for {
		c.recordDue(ctx, e, sess)
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-retry.C():
		}
	}
}

func (c *Coordinator) recordDue(ctx context.Context, e *concurrency.Election, sess *Session) {
	c.mu.Lock()
	due := c.ledger.due()
	c.mu.Unlock()
	for _, ev := range due {
		if ctx.Err() != nil {
			return
		}
		if err := c.record(ctx, e, sess, ev); err != nil {
			c.log.Warn("recording death failed; will retry", "member", ev.Member.Name, "incarnation", ev.Member.Incarnation, "error", err)
			continue
		}
		if c.handler != nil {
			if err := c.handler(ctx, ev.Member); err != nil {
				c.log.Warn("death handling failed; will retry", "member", ev.Member.Name, "error", err)
				continue
			}
		}
		c.mu.Lock()
		c.ledger.done(ev.Member)
		c.mu.Unlock()
	}
}

var errNotLeader = errors.New("coordinator: no longer the leader")

// record writes the death record unless one exists, and only while this
// node still holds the coordinator role.
func (c *Coordinator) record(ctx context.Context, e *concurrency.Election, sess *Session, ev Event) error {
	key := DeathsPrefix(c.prefix) + ev.Member.Name + "/" + ev.Member.Incarnation
	rec := DeathRecord{
		Name: ev.Member.Name, Incarnation: ev.Member.Incarnation, Kind: ev.Member.Kind,
		Revision: ev.Revision, RecordedBy: sess.Name(), RecordedAt: c.clk.Now().UTC(),
	}
	val, _ := json.Marshal(rec)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())).
		Then(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(key, string(val))},
			nil)).
		Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return errNotLeader
	}
	inner := resp.Responses[0].GetResponseTxn()
	if inner != nil && inner.Succeeded {
		c.log.Info("recorded death", "member", ev.Member.Name, "incarnation", ev.Member.Incarnation, "revision", ev.Revision)
	}
	return nil
}

// CoordinatorName returns the name of the current coordinator, or "" when
// there is none.
func CoordinatorName(ctx context.Context, cli *clientv3.Client, prefix string) (string, error) {
	resp, err := cli.Get(ctx, CoordinatorPrefix(prefix)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
