package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/internal/keys"
)

// Watcher keeps a View current from etcd and hands every member event to
// its subscribers, in order.
type Watcher struct {
	cli    *clientv3.Client
	prefix string
	log    hclog.Logger

	mu   sync.Mutex
	view *View
	subs []func(Event)
	// ready is closed after the first full listing.
	ready     chan struct{}
	readyOnce sync.Once
}

// NewWatcher returns a watcher of the members under the cluster prefix.
func NewWatcher(cli *clientv3.Client, prefix string, log hclog.Logger) *Watcher {
	return &Watcher{cli: cli, prefix: keys.Of(prefix).Members(), log: log, view: NewView(), ready: make(chan struct{})}
}

// Subscribe registers fn for every later event. fn runs on the watcher's
// goroutine and must not block.
func (w *Watcher) Subscribe(fn func(Event)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subs = append(w.subs, fn)
}

// Ready is closed once the view holds a full listing.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Members lists the live members.
func (w *Watcher) Members() []keys.MemberRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.view.Members()
}

// Run lists the members, then follows changes until ctx ends. After a
// broken or compacted watch it lists again, so no change is missed.
func (w *Watcher) Run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := w.list(ctx)
		if err != nil {
			w.log.Warn("member listing failed", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff < time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 50 * time.Millisecond
		w.follow(ctx, rev)
	}
}

func (w *Watcher) list(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := w.cli.Get(rctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	var list []keys.MemberRecord
	for _, kv := range resp.Kvs {
		if m, ok := w.decode(kv); ok {
			list = append(list, m)
		}
	}
	w.mu.Lock()
	evs := w.view.Reset(list, resp.Header.Revision)
	w.emit(evs)
	w.mu.Unlock()
	w.readyOnce.Do(func() { close(w.ready) })
	return resp.Header.Revision, nil
}

func (w *Watcher) follow(ctx context.Context, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range w.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			if !errors.Is(err, rpctypes.ErrCompacted) {
				w.log.Warn("member watch broken", "error", err)
			}
			return
		}
		w.mu.Lock()
		for _, ev := range resp.Events {
			name := strings.TrimPrefix(string(ev.Kv.Key), w.prefix)
			switch ev.Type {
			case mvccpb.PUT:
				if m, ok := w.decode(ev.Kv); ok {
					w.emit(w.view.Put(m, ev.Kv.ModRevision))
				}
			case mvccpb.DELETE:
				w.emit(w.view.Delete(name, ev.Kv.ModRevision))
			}
		}
		w.mu.Unlock()
	}
}

// emit runs with w.mu held.
func (w *Watcher) emit(evs []Event) {
	for _, ev := range evs {
		w.log.Info("member "+string(ev.Kind), "member", ev.Member.Name, "incarnation", ev.Member.Incarnation, "kind", ev.Member.Kind, "revision", ev.Revision)
		for _, fn := range w.subs {
			fn(ev)
		}
	}
}

func (w *Watcher) decode(kv *mvccpb.KeyValue) (keys.MemberRecord, bool) {
	var m keys.MemberRecord
	if err := json.Unmarshal(kv.Value, &m); err != nil || m.Name == "" {
		w.log.Warn("ignoring malformed member key", "key", string(kv.Key), "error", err)
		return m, false
	}
	return m, true
}
