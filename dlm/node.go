package dlm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Node is one incarnation's participant in the lock manager: it keeps a
// replica of the cluster's lock table from a single long-lived watch,
// writes its own requests to etcd, caches the locks it was granted and
// hands them to local users. It is the thin shell around Table and
// Replica; all of its methods are safe for concurrent use.
type Node struct {
	cfg  Config
	keys keyspace
	log  hclog.Logger
	me   Owner

	mu        sync.Mutex
	rep       *Replica
	rev       int64 // last revision the replica has seen
	revCond   *sync.Cond
	locks     map[string]*nodeLock // by lock name
	byKey     map[string]*nodeLock // by request key
	seq       uint64
	waiterSeq uint64
	idleTick  uint64
	mayIdle   int // idle cached locks at the last walk + holds released since (evict)
	fenced    error
	fencedAt  time.Time
	lost      chan struct{}
	audit     Audit
	watchers  []chan Decision

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	writes sync.WaitGroup // request writes in flight

	etcdWrites atomic.Uint64
	stats      Stats // counters other than etcdWrites, under mu

	cpModRev  int64     // mod revision of the newest checkpoint seen
	cpSeen    time.Time // when it was seen (or the node started)
	cpWriting bool
	cpWant    int64 // revision of a request for a checkpoint not answered yet

	closeLVBs []closeLVB // releases and down-conversions a close cut short (Close writes their value blocks)
}

// closeLVB is the value block of a release or down-conversion that Close
// cut short, and the condition under which it did not happen: Close
// writes the value block only then (had it happened, the value block went
// with it, and a later holder may have written a newer one since).
type closeLVB struct {
	put    clientv3.Op
	req    string
	unless clientv3.Cmp // holds while the write did not happen
}

// nodeLock is the node-level lock on one resource, shared by local users.
type nodeLock struct {
	name     string
	res      Resource
	recovery bool

	key       string // current request key; "" if none
	createRev int64
	reqVal    string // the value last written under key
	busy      bool   // a write is in flight
	draining  bool   // an uncached grant was used up: release it, hand nothing out
	held      bool
	granted   Mode
	want      Mode // mode asked of the cluster
	token     Token
	lvb       []byte
	lvbValid  bool
	lvbDirty  bool // a local holder wrote lvb; written back on release or down-conversion
	refused   bool
	fresh     bool // just granted: the waiters that asked get in even if a callback came with the grant
	blocked   bool
	blockMode Mode
	blockedAt uint64        // local waiters queued before this still get the grant
	blockCh   chan struct{} // closed by the next blocking callback (Lock.Blocking)
	idleSince uint64        // Node.idleTick when the last local user left

	users   map[*Lock]Mode
	waiters []*waiter
}

type waiter struct {
	seq    uint64 // local arrival order
	mode   Mode
	try    bool
	conv   *Lock // set when an existing holder converts
	ch     chan *Lock
	err    error
	done   bool
	failOn bool // fail with ErrDeadlock on a persistent cycle
	cycle  time.Time
}

// Audit is a node's record of lock use, for proving that no lock was used
// after the self-fence deadline.
type Audit struct {
	// Uses counts successful Lock.Use calls.
	Uses uint64
	// LastUse is the local time of the last successful Use, and
	// DeadlineAtLastUse the self-fence deadline it was checked against.
	LastUse           time.Time
	DeadlineAtLastUse time.Time
	// Refused counts Use calls refused because the node was fenced.
	Refused uint64
	// FencedAt is when the node stopped using its locks (zero if not).
	FencedAt time.Time
	// Deadline is the member's self-fence deadline when the audit was read.
	Deadline time.Time
}

// Start joins the lock manager: it catches the replica up with the
// cluster and starts the watch and the self-fence monitor.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:   cfg,
		keys:  newKeyspace(cfg.Prefix),
		log:   cfg.Logger.Named("dlm"),
		me:    Owner{Node: cfg.Member.Name(), Incarnation: cfg.Member.Incarnation()},
		rep:   NewReplica(cfg.Prefix),
		locks: map[string]*nodeLock{},
		byKey: map[string]*nodeLock{},
		lost:  make(chan struct{}),
	}
	n.revCond = sync.NewCond(&n.mu)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	rep, from, target, err := loadReplica(ctx, cfg.Client, cfg.Prefix)
	if err != nil {
		n.cancel()
		return nil, err
	}
	n.rep = rep
	n.cpSeen = cfg.Clock.Now()
	n.rev = from - 1
	// No WithRequireLeader: a leader election must not end the watch (the
	// node would fence itself); a member cut off from the quorum leaves the
	// watch silent, and the lease deadline fences the node in time.
	// Watch blocks until the watch stream is set up; a start that is
	// given up (ctx) must not wait for an etcd that does not answer.
	stopSetup := context.AfterFunc(ctx, n.cancel)
	wch := cfg.Client.Watch(n.ctx, n.keys.root(), clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	if !stopSetup() {
		return nil, fmt.Errorf("dlm: watching the lock table: %w", ctx.Err())
	}
	n.wg.Add(3)
	go n.watchLoop(wch)
	go n.monitor()
	go n.checkpointLoop()
	if err := n.waitRev(ctx, target); err != nil {
		n.cancel()
		n.wg.Wait()
		return nil, fmt.Errorf("dlm: catching up with the lock table: %w", err)
	}
	if err := n.Err(); err != nil {
		n.cancel()
		n.wg.Wait()
		return nil, fmt.Errorf("dlm: fenced while joining: %w", err)
	}
	n.log.Info("joined lock manager", "node", n.me.Node, "incarnation", n.me.Incarnation, "revision", target)
	return n, nil
}

// Owner returns the incarnation this node acts for.
func (n *Node) Owner() Owner { return n.me }

// EtcdWrites counts the etcd transactions the node issued.
func (n *Node) EtcdWrites() uint64 { return n.etcdWrites.Load() }

// Stats are a node's counters, for metrics.
type Stats struct {
	// LocalGrants counts holds handed to local users, and CachedGrants
	// those of them served from a cached grant without waiting.
	LocalGrants, CachedGrants uint64
	// ClusterGrants counts grants (and conversions) of this node's
	// requests by the lock table.
	ClusterGrants uint64
	// BlockingCallbacks counts blocking callbacks received.
	BlockingCallbacks uint64
	// EtcdWrites counts etcd transactions.
	EtcdWrites uint64
	// CachedLocks is the number of node-level locks currently kept.
	CachedLocks int
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.stats
	s.EtcdWrites = n.etcdWrites.Load()
	s.CachedLocks = len(n.locks)
	return s
}

// waitRev blocks until the replica has seen revision rev.
func (n *Node) waitRev(ctx context.Context, rev int64) error {
	stop := context.AfterFunc(ctx, func() {
		n.mu.Lock()
		n.revCond.Broadcast()
		n.mu.Unlock()
	})
	defer stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	go func() {
		// Progress requests make the server tell us it has sent
		// everything up to its revision, even when nothing changes.
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.ctx.Done():
				return
			case <-tick.C:
				n.mu.Lock()
				ok := n.rev >= rev
				n.mu.Unlock()
				if ok {
					return
				}
				n.requestProgress()
			}
		}
	}()
	n.mu.Lock()
	defer n.mu.Unlock()
	for n.rev < rev {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n.fenced != nil {
			return n.fenced
		}
		n.revCond.Wait()
	}
	return nil
}

func (n *Node) watchLoop(wch clientv3.WatchChan) {
	defer n.wg.Done()
	for resp := range wch {
		if err := resp.Err(); err != nil {
			n.mu.Lock()
			if resp.CompactRevision != 0 {
				// The replica fell behind what etcd keeps: it cannot follow
				// the table any more, so its locks cannot be trusted.
				n.fence(fmt.Errorf("%w: %w: the watch fell behind etcd's compaction at revision %d: %v", ErrLeaseLost, ErrCompacted, resp.CompactRevision, err))
			} else {
				n.fence(fmt.Errorf("%w: watch of the lock table failed: %v", ErrLeaseLost, err))
			}
			n.mu.Unlock()
			return
		}
		n.mu.Lock()
		dirty := map[*nodeLock]bool{}
		for _, ev := range resp.Events {
			ds, err := n.rep.Apply(ev)
			if err != nil {
				n.log.Warn("ignoring lock table event", "key", string(ev.Kv.Key), "error", err)
			}
			n.route(ds, dirty)
			if ev.Kv.ModRevision > n.rev {
				n.rev = ev.Kv.ModRevision
			}
			switch string(ev.Kv.Key) {
			case n.keys.checkpoint():
				n.cpModRev, n.cpSeen = ev.Kv.ModRevision, n.cfg.Clock.Now()
				if ev.Kv.ModRevision > n.cpWant {
					n.cpWant = 0 // answered
				}
			case n.keys.checkpointRequest():
				if ev.Type == mvccpb.PUT {
					n.cpWant = ev.Kv.ModRevision
				}
			}
		}
		n.maybeCheckpoint()
		if resp.IsProgressNotify() && resp.Header.Revision > n.rev {
			n.rev = resp.Header.Revision
		}
		for nl := range dirty {
			n.drive(nl)
		}
		n.revCond.Broadcast()
		n.mu.Unlock()
	}
	n.mu.Lock()
	if n.ctx.Err() == nil {
		n.fence(fmt.Errorf("%w: watch of the lock table closed", ErrLeaseLost))
	}
	n.revCond.Broadcast()
	n.mu.Unlock()
}

// route applies the table's decisions about this node's own requests.
func (n *Node) route(ds []Decision, dirty map[*nodeLock]bool) {
	for _, d := range ds {
		for _, c := range n.watchers {
			select {
			case c <- d:
			default: // a slow watcher misses events rather than stall the node
			}
		}
		if d.Owner != n.me {
			continue
		}
		nl := n.byKey[d.ID]
		switch d.Kind {
		case Dropped, Orphaned:
			n.fence(fmt.Errorf("%w: the cluster considers %s dead", ErrLeaseLost, n.me))
			continue
		}
		if nl == nil || d.ID != nl.key {
			continue // a request being released
		}
		dirty[nl] = true
		switch d.Kind {
		case Granted:
			n.stats.ClusterGrants++
			nl.held, nl.granted, nl.token = true, d.Mode, d.Token
			nl.blocked, nl.fresh = false, true
			for u := range nl.users {
				u.token = d.Token // the holds now ride on this grant (a conversion)
			}
			if !nl.lvbDirty {
				nl.lvb, nl.lvbValid = d.LVB, d.LVBValid
			}
			n.log.Trace("granted", "resource", nl.res, "mode", d.Mode, "token", d.Token)
		case Blocking:
			n.stats.BlockingCallbacks++
			if !nl.blocked {
				nl.blockedAt = n.waiterSeq
			}
			nl.blocked, nl.blockMode = true, d.Mode
			if nl.blockCh != nil {
				close(nl.blockCh)
				nl.blockCh = nil
			}
			n.log.Trace("blocking callback", "resource", nl.res, "held", nl.granted, "wanted", d.Mode)
		case Refused:
			nl.refused = true
			if nl.held {
				nl.want = nl.granted // a refused conversion keeps its grant
			} else {
				// A refused new request leaves no trace in the table:
				// nothing is asked for any more (granted is a former
				// grant's mode, and taken for a pending request it would
				// cover the next local waiter, who would then wait for a
				// grant that never comes).
				nl.want = NL
			}
		}
	}
}

func (n *Node) monitor() {
	defer n.wg.Done()
	m, clk := n.cfg.Member, n.cfg.Clock
	for {
		d := m.Deadline()
		now := clk.Now()
		if !now.Before(d) {
			n.mu.Lock()
			n.fence(fmt.Errorf("%w: self-fence deadline %s passed", ErrLeaseLost, d.Format(time.RFC3339Nano)))
			n.mu.Unlock()
			return
		}
		t := clk.NewTimer(d.Sub(now))
		select {
		case <-t.C():
		case <-m.Lost():
			t.Stop()
			n.mu.Lock()
			n.fence(fmt.Errorf("%w: membership reported the lease lost", ErrLeaseLost))
			n.mu.Unlock()
			return
		case <-n.ctx.Done():
			t.Stop()
			return
		}
	}
}

// alive checks, under mu, that the node may still hand out and use locks.
func (n *Node) alive() error {
	if n.fenced != nil {
		return n.fenced
	}
	select {
	case <-n.cfg.Member.Lost():
		n.fence(fmt.Errorf("%w: membership reported the lease lost", ErrLeaseLost))
		return n.fenced
	default:
	}
	if d := n.cfg.Member.Deadline(); !n.cfg.Clock.Now().Before(d) {
		n.fence(fmt.Errorf("%w: self-fence deadline %s passed", ErrLeaseLost, d.Format(time.RFC3339Nano)))
		return n.fenced
	}
	return nil
}

// fence stops all use of this node's locks, under mu.
func (n *Node) fence(err error) {
	if n.fenced != nil {
		return
	}
	n.fenced = err
	n.revCond.Broadcast() // waiters on the replica's progress give up
	n.fencedAt = n.cfg.Clock.Now()
	n.audit.FencedAt = n.fencedAt
	close(n.lost)
	for _, nl := range n.locks {
		if nl.blockCh != nil {
			close(nl.blockCh)
			nl.blockCh = nil
		}
		for _, w := range nl.waiters {
			n.finish(w, nil, err)
		}
		nl.waiters = nil
	}
	if !errors.Is(err, ErrClosed) {
		n.log.Error("node fenced: no lock may be used any more", "error", err)
	}
}

// Lost is closed when the node stops using its locks (fenced or closed).
func (n *Node) Lost() <-chan struct{} { return n.lost }

// Err returns why the node was fenced, or nil.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fenced
}

// Audit returns the node's record of lock use.
func (n *Node) Audit() Audit {
	n.mu.Lock()
	defer n.mu.Unlock()
	a := n.audit
	a.Deadline = n.cfg.Member.Deadline()
	return a
}

// Close withdraws every request of this node from the cluster (a clean
// leave: nothing is left for recovery), fails waiters with ErrClosed and
// stops the node. Holders' Lost channels are closed. A clean close gives
// every lock up, so the value blocks that PW and EX holders wrote (cached
// locks included) reach etcd before the requests go, as a release would
// write them. If Close fails (ctx ends, the lease is gone), the requests
// stay until the lease expires and the value blocks of PW and EX locks
// become invalid then, never stale.
func (n *Node) Close(ctx context.Context) error {
	n.mu.Lock()
	wasFenced := n.fenced
	n.fence(ErrClosed)
	n.mu.Unlock()
	// No new write starts once fenced; let those in flight land first, so
	// that none recreates a request after the withdrawal below.
	n.writes.Wait()
	var err error
	if wasFenced == nil {
		err = n.withdraw(ctx)
	}
	n.cancel()
	n.wg.Wait()
	return err
}

// maxTxnOps stays below etcd's default limit of operations in one
// transaction (--max-txn-ops, 128).
const maxTxnOps = 100

// withdraw writes back the dirty value blocks of the node's locks and
// deletes its requests, each transaction guarded by the member's lease.
func (n *Node) withdraw(ctx context.Context) error {
	n.mu.Lock()
	cut := n.closeLVBs
	n.closeLVBs = nil
	var puts []clientv3.Op
	for _, name := range sortedKeys(n.locks) {
		nl := n.locks[name]
		if nl.key != "" && nl.held && nl.lvbDirty && (nl.granted == PW || nl.granted == EX) {
			puts = append(puts, n.lvbWrite(nl))
			nl.lvbDirty = false
		}
	}
	n.mu.Unlock()
	m := n.cfg.Member
	guard := clientv3.Compare(clientv3.LeaseValue(m.MemberKey()), "=", int64(m.LeaseID()))
	// Value blocks of releases and down-conversions cut short go first
	// (the locks of the same resources held since are newer), each only
	// while the write did not happen: if it did, its value block went
	// with it.
	for _, c := range cut {
		resp, err := n.cfg.Client.Txn(ctx).If(guard, c.unless).Then(c.put).Commit()
		n.etcdWrites.Add(1)
		if err != nil {
			return fmt.Errorf("dlm: writing back value blocks: %w", err)
		}
		if !resp.Succeeded {
			n.log.Debug("release cut short by close had happened; its value block with it", "request", c.req)
		}
	}
	for len(puts) > 0 {
		batch := puts[:min(len(puts), maxTxnOps)]
		puts = puts[len(batch):]
		resp, err := n.cfg.Client.Txn(ctx).If(guard).Then(batch...).Commit()
		n.etcdWrites.Add(1)
		switch {
		case err != nil:
			return fmt.Errorf("dlm: writing back value blocks: %w", err)
		case !resp.Succeeded:
			return fmt.Errorf("dlm: writing back value blocks: %w", ErrLeaseLost)
		}
	}
	resp, err := n.cfg.Client.Txn(ctx).If(guard).Then(clientv3.OpDelete(n.keys.ownerReqs(n.me), clientv3.WithPrefix())).Commit()
	n.etcdWrites.Add(1)
	switch {
	case err != nil:
		return fmt.Errorf("dlm: withdrawing requests: %w", err)
	case !resp.Succeeded:
		return fmt.Errorf("dlm: withdrawing requests: %w", ErrLeaseLost)
	}
	return nil
}

// Locks lists the cluster's lock table as this node sees it.
func (n *Node) Locks() []LockInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rep.Table.Locks()
}

// WaitFor returns the cluster's wait-for graph as this node sees it.
func (n *Node) WaitFor() []WaitEdge {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rep.Table.WaitFor()
}

// DeadlockVictims returns the requests chosen to give way in the
// cluster's wait-for cycles (Table.DeadlockVictims) as this node sees
// them; every node sees the same ones once its replica has caught up.
func (n *Node) DeadlockVictims() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rep.Table.DeadlockVictims()
}

// Check runs the lock table's consistency check on this node's replica.
func (n *Node) Check() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rep.Table.Check()
}

// Revision is the last etcd revision the node's replica has seen.
func (n *Node) Revision() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rev
}

// Watch streams every decision of the lock table (grants, conversions,
// blocking callbacks, refusals, deaths) until ctx ends. A consumer that
// falls behind by more than buf decisions misses some.
func (n *Node) Watch(ctx context.Context, buf int) <-chan Decision {
	c := make(chan Decision, buf)
	n.mu.Lock()
	n.watchers = append(n.watchers, c)
	n.mu.Unlock()
	context.AfterFunc(ctx, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		for i, w := range n.watchers {
			if w == c {
				n.watchers = append(n.watchers[:i], n.watchers[i+1:]...)
				close(c)
				return
			}
		}
	})
	return c
}

// maybeCheckpoint writes a checkpoint of the replica, under mu, when none
// was seen for Config.CheckpointInterval (plus a per-node offset, so that
// nodes rarely race; the write is conditional on the checkpoint seen, so
// only one of racing writers wins), or at once when a reader asked for
// one (its history was compacted) and no checkpoint came since.
func (n *Node) maybeCheckpoint() {
	force := n.cpWant != 0
	if n.cpWriting || n.fenced != nil || (!force && len(n.rep.Table.reqs) == 0) {
		return
	}
	iv := n.cfg.CheckpointInterval
	var h uint32
	for _, c := range n.me.String() {
		h = h*31 + uint32(c)
	}
	wait := iv + time.Duration(h%1000)*iv/2000
	if !force && n.cfg.Clock.Since(n.cpSeen) < wait {
		return
	}
	data, err := n.rep.Checkpoint(n.rev)
	if err != nil {
		n.log.Warn("cannot checkpoint the lock table", "error", err)
		return
	}
	n.cpWriting = true
	seen, rev := n.cpModRev, n.rev
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		defer cancel()
		stored, writes, err := putCheckpoint(ctx, n.cfg.Client, n.keys, seen, rev, n.me.Node, data, n.cfg.CheckpointPartBytes)
		n.etcdWrites.Add(uint64(writes))
		n.mu.Lock()
		defer n.mu.Unlock()
		n.cpWriting = false
		switch {
		case err != nil:
			n.log.Warn("writing a lock table checkpoint failed", "bytes", len(data), "error", err)
			n.cpSeen = n.cfg.Clock.Now() // try again one interval later
		case stored:
			n.log.Debug("wrote lock table checkpoint", "revision", rev, "bytes", len(data), "writes", writes)
		}
	}()
}

// checkpointLoop keeps checkpoints coming when the lock table is idle:
// progress requests move the replica's revision forward even without DLM
// events, so a checkpoint stays newer than what compaction removes.
func (n *Node) checkpointLoop() {
	defer n.wg.Done()
	t := n.cfg.Clock.NewTicker(n.cfg.CheckpointInterval / 4)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C():
		}
		n.requestProgress()
		n.mu.Lock()
		n.maybeCheckpoint()
		n.mu.Unlock()
	}
}

// requestProgress asks the server to report the watch's revision. The
// context must carry the same (no) metadata as the watch's: the client
// picks the gRPC stream by it, and another stream would get the answer.
func (n *Node) requestProgress() {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	_ = n.cfg.Client.RequestProgress(ctx)
}
