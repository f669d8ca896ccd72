package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/dlm"
	"github.com/shoal-ha/shoal/internal/keys"
)

// Admin routes of the lock manager, for lockctl and the dashboard:
//
//	GET  /api/locks[?node=&resource_prefix=&volume=&range=&id=&limit=]  LocksView
//	GET  /api/locks/resource?name=RESOURCE                             ResourceView (404: unknown)
//	GET  /api/locks/watch                                              LockEvent per line (NDJSON) until the client goes
//	POST /api/locks/force-release {"id": ..., "by": ...}                ForceReleased (admin role)
//
// Reads answer from this node's replica of the lock table (the resource
// view and the watch from etcd); force-release writes to etcd.
func (l *lockService) routes(a *cluster.AdminServer) {
	a.Handle("GET /api/locks", http.HandlerFunc(l.handleLocks))
	a.Handle("GET /api/locks/resource", http.HandlerFunc(l.handleResource))
	a.Handle("GET /api/locks/watch", http.HandlerFunc(l.handleWatch))
	a.Handle("POST /api/locks/force-release", http.HandlerFunc(l.handleForceRelease))
}

// LockQuery selects locks of the lock table. The zero value selects all.
type LockQuery struct {
	// Node: only locks of this node (any incarnation).
	Node string
	// ResourcePrefix: only resources whose name starts with it.
	ResourcePrefix string
	// Volume: only regions of this volume; with HasRange, only those
	// overlapping bytes [Lo, Hi).
	Volume   string
	HasRange bool
	Lo, Hi   uint64
	// ID: only this request.
	ID string
	// Limit bounds the locks listed (0: no bound); the counts still cover
	// every match.
	Limit int
}

// ParseRange reads START-END in bytes, END > START.
func ParseRange(s string) (lo, hi uint64, err error) {
	a, b, ok := strings.Cut(s, "-")
	var err1, err2 error
	lo, err1 = strconv.ParseUint(a, 10, 64)
	hi, err2 = strconv.ParseUint(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || hi <= lo {
		return 0, 0, fmt.Errorf("bad range %q: want START-END in bytes with END > START", s)
	}
	return lo, hi, nil
}

// Values is q as URL query parameters of GET /api/locks.
func (q LockQuery) Values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("node", q.Node)
	set("resource_prefix", q.ResourcePrefix)
	set("volume", q.Volume)
	set("id", q.ID)
	if q.HasRange {
		v.Set("range", fmt.Sprintf("%d-%d", q.Lo, q.Hi))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// ParseLockQuery reads the parameters of GET /api/locks.
func ParseLockQuery(v url.Values) (LockQuery, error) {
	q := LockQuery{Node: v.Get("node"), ResourcePrefix: v.Get("resource_prefix"), Volume: v.Get("volume"), ID: v.Get("id")}
	if r := v.Get("range"); r != "" {
		if q.Volume == "" {
			return q, errors.New("range needs volume")
		}
		var err error
		if q.Lo, q.Hi, err = ParseRange(r); err != nil {
			return q, err
		}
		q.HasRange = true
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, fmt.Errorf("bad limit %q: want a count >= 0", s)
		}
		q.Limit = n
	}
	return q, nil
}

// Match says whether q selects l.
func (q LockQuery) Match(l dlm.LockInfo) bool {
	switch {
	case q.Node != "" && l.Owner.Node != q.Node:
	case q.ID != "" && l.ID != q.ID:
	case q.ResourcePrefix != "" && !strings.HasPrefix(l.Resource.String(), q.ResourcePrefix):
	case q.Volume != "" && l.Resource.Volume != q.Volume:
	case q.HasRange && !l.Resource.Overlaps(dlm.Region(q.Volume, q.Lo, q.Hi)):
	default:
		return true
	}
	return false
}

// LocksView is the answer of GET /api/locks.
type LocksView struct {
	// Owner is the answering node's incarnation; Revision the etcd
	// revision its replica has seen.
	Owner    dlm.Owner `json:"owner"`
	Revision int64     `json:"revision"`
	// Locks are the selected requests, those that wait, convert, are
	// orphaned or block someone first, at most the query's limit.
	Locks []dlm.LockInfo `json:"locks"`
	// Total counts every request in the table, Matched those the query
	// selects (more than len(Locks) when the limit cut the list).
	Total   int `json:"total"`
	Matched int `json:"matched"`
	// Owners counts the selected requests per owner, Kinds per kind of
	// resource (a volume's regions, or a name up to its last "/").
	Owners []OwnerCount   `json:"owners"`
	Kinds  []KindCount    `json:"kinds"`
	Dead   []dlm.Owner    `json:"dead_owners"`
	Waits  []dlm.WaitEdge `json:"wait_for"`
	Cycles [][]dlm.Owner  `json:"cycles"`
	// Victims are the requests chosen to give way in the cycles.
	Victims []string `json:"victims"`
	// Check is "ok" or what the lock table's consistency check found.
	Check string `json:"check"`
}

// OwnerCount counts one owner's requests.
type OwnerCount struct {
	Owner   dlm.Owner `json:"owner"`
	Held    int       `json:"held"`
	Waiting int       `json:"waiting"`
	Orphan  int       `json:"orphan"`
}

// KindCount counts the requests on one kind of resource.
type KindCount struct {
	Kind  string `json:"kind"`
	Count int    `json:"count"`
}

// resourceKind groups resources for the counts: "VOLUME@ regions", a
// name up to its last "/" and the "/" (store-1a2b/i/ for inode locks), or
// a name without its trailing digits (bulk- for bulk-001).
func resourceKind(r dlm.Resource) string {
	if r.Volume != "" {
		return r.Volume + "@ regions"
	}
	if i := strings.LastIndex(r.Name, "/"); i > 0 {
		return r.Name[:i+1]
	}
	if k := strings.TrimRight(r.Name, "0123456789"); k != "" {
		return k
	}
	return r.Name
}

// countKinds counts locks per resource kind, most first.
func countKinds(locks []dlm.LockInfo) []KindCount {
	idx := map[string]int{}
	var out []KindCount
	for _, l := range locks {
		k := resourceKind(l.Resource)
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, KindCount{Kind: k})
		}
		out[i].Count++
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// notable: a request an operator looks for first.
func notable(l dlm.LockInfo) bool {
	return !l.Held || l.Want != l.Granted || l.Orphan || l.Recovery || l.Blocking
}

// selectLocks filters locks by q, puts the notable ones first (then by
// resource) and cuts the list at q.Limit.
func selectLocks(locks []dlm.LockInfo, q LockQuery) (out []dlm.LockInfo, matched int, owners []OwnerCount, kinds []KindCount) {
	idx := map[dlm.Owner]int{}
	for _, l := range locks {
		if !q.Match(l) {
			continue
		}
		out = append(out, l)
		i, ok := idx[l.Owner]
		if !ok {
			i = len(owners)
			idx[l.Owner] = i
			owners = append(owners, OwnerCount{Owner: l.Owner})
		}
		switch {
		case l.Orphan:
			owners[i].Orphan++
		case l.Held:
			owners[i].Held++
		default:
			owners[i].Waiting++
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if a, b := notable(out[i]), notable(out[j]); a != b {
			return a
		}
		return out[i].Resource.String() < out[j].Resource.String()
	})
	sort.Slice(owners, func(i, j int) bool { return owners[i].Owner.String() < owners[j].Owner.String() })
	matched, kinds = len(out), countKinds(out)
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	if out == nil {
		out = []dlm.LockInfo{}
	}
	return out, matched, owners, kinds
}

// handleLocks serves GET /api/locks: the lock table as this node sees it.
func (l *lockService) handleLocks(w http.ResponseWriter, r *http.Request) {
	q, err := ParseLockQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	d, err := l.current(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	all := d.Locks()
	waits := d.WaitFor()
	v := LocksView{Owner: d.Owner(), Revision: d.Revision(), Total: len(all), Dead: d.DeadOwners(), Waits: waits,
		Cycles: dlm.OwnerCycles(waits), Victims: d.DeadlockVictims(), Check: "ok"}
	v.Locks, v.Matched, v.Owners, v.Kinds = selectLocks(all, q)
	if err := d.Check(); err != nil {
		v.Check = err.Error()
	}
	cluster.WriteJSON(w, http.StatusOK, v)
}

// ResourceView is the answer of GET /api/locks/resource: the requests on
// one resource (for a region, on every overlapping region) and its lock
// value block.
type ResourceView struct {
	Resource dlm.Resource   `json:"resource"`
	Revision int64          `json:"revision"`
	Locks    []dlm.LockInfo `json:"locks"`
	LVB      []byte         `json:"lvb"`
	LVBValid bool           `json:"lvb_valid"`
}

func (l *lockService) handleResource(w http.ResponseWriter, r *http.Request) {
	res, err := dlm.ParseResource(r.URL.Query().Get("name"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), l.n.Config().RequestTimeout())
	defer cancel()
	rep, rev, err := dlm.LoadTable(ctx, l.n.Client(), l.n.Config().Prefix())
	if err != nil {
		http.Error(w, "reading the lock table: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if !rep.Table.Known(res) {
		http.Error(w, fmt.Sprintf("unknown resource %s: nobody holds or waits for it and no value block was written", res), http.StatusNotFound)
		return
	}
	v := ResourceView{Resource: res, Revision: rev, Locks: []dlm.LockInfo{}}
	for _, lk := range rep.Table.Locks() {
		if lk.Resource.Overlaps(res) {
			v.Locks = append(v.Locks, lk)
		}
	}
	v.LVB, v.LVBValid = rep.Table.LVB(res)
	cluster.WriteJSON(w, http.StatusOK, v)
}

// LockEvent is one line of GET /api/locks/watch. Kind is "start" (first
// line: Revision is the table's, Requests how many there are), a
// decision of the lock table (granted, blocking, refused, dropped,
// orphaned...), "release" (a request's key went away: ID) or
// "recovery-released" (a dead owner's locks were handed on: ID is the
// owner, Detail the record).
type LockEvent struct {
	Kind     string    `json:"kind"`
	Revision int64     `json:"revision"`
	Requests int       `json:"requests,omitempty"`
	ID       string    `json:"id,omitempty"`
	Owner    dlm.Owner `json:"owner,omitzero"`
	Resource string    `json:"resource,omitempty"`
	Mode     dlm.Mode  `json:"mode,omitempty"`
	Token    dlm.Token `json:"token,omitzero"`
	// Text is the decision as the lock table prints it.
	Text   string `json:"text,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// handleWatch streams the lock table's events as JSON lines until the
// client goes away or the node stops.
func (l *lockService) handleWatch(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	cli, prefix := l.n.Client(), l.n.Config().Prefix()
	lctx, cancel := context.WithTimeout(r.Context(), l.n.Config().RequestTimeout())
	rep, rev, err := dlm.LoadTable(lctx, cli, prefix)
	cancel()
	if err != nil {
		http.Error(w, "reading the lock table: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(e LockEvent) bool {
		if enc.Encode(e) != nil {
			return false
		}
		fl.Flush()
		return true
	}
	if !send(LockEvent{Kind: "start", Revision: rev, Requests: len(rep.Table.Locks())}) {
		return
	}
	ks := keys.Of(prefix)
	ctx := clientv3.WithRequireLeader(r.Context())
	for resp := range cli.Watch(ctx, ks.All(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if resp.Err() != nil {
			send(LockEvent{Kind: "error", Detail: resp.Err().Error()})
			return
		}
		for _, ev := range resp.Events {
			ds, err := rep.Apply(ev)
			if err != nil {
				l.log.Debug("lock watch: ignoring event", "error", err)
			}
			key, mod := string(ev.Kv.Key), ev.Kv.ModRevision
			if ev.Type == clientv3.EventTypeDelete && strings.HasPrefix(key, ks.DLMRequests()) {
				if !send(LockEvent{Kind: "release", ID: key, Revision: mod}) {
					return
				}
			}
			if rest, ok := strings.CutPrefix(key, ks.DLMRecovered()); ok && ev.Type == clientv3.EventTypePut {
				if !send(LockEvent{Kind: "recovery-released", ID: rest, Detail: string(ev.Kv.Value), Revision: mod}) {
					return
				}
			}
			for _, d := range ds {
				if !send(LockEvent{Kind: d.Kind.String(), ID: d.ID, Owner: d.Owner, Resource: d.Resource.String(), Mode: d.Mode, Token: d.Token, Text: d.String(), Revision: mod}) {
					return
				}
			}
		}
	}
}

// ForceReleaseRequest is the body of POST /api/locks/force-release: the
// request's ID (its etcd key, as GET /api/locks lists it) and who asks
// (kept in the record).
type ForceReleaseRequest struct {
	ID string `json:"id"`
	By string `json:"by"`
}

// ForceReleased is the answer of POST /api/locks/force-release: the
// released request and the key prefix its record went under.
type ForceReleased struct {
	Lock   dlm.LockInfo `json:"lock"`
	Record string       `json:"record"`
}

// handleForceRelease removes a request whose owner is gone (dlm.ForceRelease:
// 409 for a live owner's request, 404 for an unknown one).
func (l *lockService) handleForceRelease(w http.ResponseWriter, r *http.Request) {
	var req ForceReleaseRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.ID == "" {
		http.Error(w, "want a JSON body {\"id\": REQUEST-ID, \"by\": WHO}", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), l.n.Config().RequestTimeout())
	defer cancel()
	cli, prefix := l.n.Client(), l.n.Config().Prefix()
	rep, _, err := dlm.LoadTable(ctx, cli, prefix)
	if err != nil {
		http.Error(w, "reading the lock table: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	lk, ok := rep.Table.Lock(req.ID)
	if !ok {
		http.Error(w, fmt.Sprintf("no request %q (GET /api/locks lists the IDs)", req.ID), http.StatusNotFound)
		return
	}
	if rep.Alive(lk.Owner) {
		http.Error(w, fmt.Sprintf("owner %s of %s is a live member; force-release is only for owners that are gone", lk.Owner, req.ID), http.StatusConflict)
		return
	}
	by := fmt.Sprintf("%s via %s at %s", req.By, l.n.Config().NodeName, time.Now().UTC().Format(time.RFC3339))
	lk, err = dlm.ForceRelease(ctx, cli, prefix, req.ID, by)
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	l.log.Warn("lock request force-released by an operator", "id", req.ID, "owner", lk.Owner, "resource", lk.Resource, "by", req.By)
	cluster.WriteJSON(w, http.StatusOK, ForceReleased{Lock: lk, Record: keys.Of(prefix).DLMForced()})
}
