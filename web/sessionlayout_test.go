package web

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/blockdev"
	"github.com/shoal-ha/shoal/internal/testlog"
	"github.com/shoal-ha/shoal/store"
	"github.com/shoal-ha/shoal/web/session"
)

// countingLocker counts the grants a node asks of the lock manager, per
// lock name.
type countingLocker struct {
	store.Locker
	mu    sync.Mutex
	asked map[string]int
}

func (c *countingLocker) Lock(ctx context.Context, name string, mode store.LockMode, opts store.LockOptions) (store.Lock, error) {
	c.mu.Lock()
	c.asked[name]++
	c.mu.Unlock()
	return c.Locker.Lock(ctx, name, mode, opts)
}

// inodeAsks is how often the node asked for the lock of inode ino.
func (c *countingLocker) inodeAsks(ino uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	suffix := fmt.Sprintf("/i/%x", ino)
	for name, k := range c.asked {
		if strings.HasSuffix(name, suffix) {
			n += k
		}
	}
	return n
}

// inodeOf is the inode number of name, found in a listing of its parent
// (under the parent's lock alone: a Stat would take name's lock, and move
// it, from the node that holds it).
func inodeOf(t *testing.T, st *store.Store, name string) uint64 {
	t.Helper()
	ents, err := st.ReadDir(path.Dir(name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != path.Base(name) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(store.FileStat).Ino
	}
	t.Fatalf("%s not found", name)
	return 0
}

// The layout's files lie in the shards of both directories, which the
// server makes at start.
func TestLayoutShardsSessionsAndKeys(t *testing.T) {
	t.Parallel()
	b := newStoreBackend(t)
	cfg := testConfig(t)
	st := b.openStore(t, 0, "n0/1", cfg)
	c := newCluster()
	m := &member{c: c, self: session.Owner{Node: "n0", Incarnation: "1"}}
	c.set(m.self, session.OwnerLive)
	srv, err := NewServer(cfg, FromStore(st), m)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, d := range cfg.Layout.Dirs() {
		if fi, err := st.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("layout directory %s: %v", d, err)
		}
	}
	if n := len(cfg.Layout.Dirs()); n != 2+2*session.Shards {
		t.Fatalf("%d layout directories, want %d", n, 2+2*session.Shards)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	id := createSession(t, hs.URL, "c1")
	if resp, body := do(t, "POST", hs.URL+"/api/v1/sessions/"+id+"/vars/n", key("k1"), `{"op":"add","value":1}`); resp.StatusCode != 200 {
		t.Fatalf("add: %d %s", resp.StatusCode, body)
	}
	for _, f := range []string{cfg.Layout.SessionFile(id), cfg.Layout.KeyFile("c1"), cfg.Layout.KeyFile("k1")} {
		dir := path.Dir(f)
		if parent := path.Dir(dir); parent != cfg.Layout.Sessions && parent != cfg.Layout.Keys {
			t.Fatalf("%s does not lie in a shard", f)
		}
		if path.Base(dir) != path.Base(f)[:1] {
			t.Fatalf("%s lies in shard %s, not in its name's first digit", f, path.Base(dir))
		}
		if _, err := st.Stat(f); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing lies in the directories themselves but the shards.
	for _, d := range []string{cfg.Layout.Sessions, cfg.Layout.Keys} {
		ents, err := fs.ReadDir(st, d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				t.Fatalf("file %s/%s outside the shards", d, e.Name())
			}
		}
	}
	if err := session.NewEngine(cfg.Layout).Check(st); err != nil {
		t.Fatal(err)
	}
	// A store without files of the flat layout at the start is not
	// looked at for them: a flat session file appearing later (a node of
	// the flat layout, which must not run beside this one) is not seen.
	const flatID = "0123456789abcdef0123456789abcdef"
	if err := st.WriteFile(path.Join(cfg.Layout.Sessions, flatID), []byte(`{"id":"`+flatID+`","vars":{},"version":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if resp, body := do(t, "GET", hs.URL+"/api/v1/sessions/"+flatID, nil, ""); resp.StatusCode != 404 {
		t.Fatalf("flat session made after the start: %d %s, want 404", resp.StatusCode, body)
	}
}

// A store written before the shards (its files directly in web/sessions
// and web/keys) keeps working: its sessions are read and changed where
// they are, its keys answered and collected; new files go into the
// shards.
func TestFlatLayoutStillRead(t *testing.T) {
	t.Parallel()
	b := newStoreBackend(t)
	cfg := testConfig(t)
	cfg.KeyRetention = time.Hour
	cfg.CollectInterval = time.Hour
	st := b.openStore(t, 0, "n0/1", cfg)
	// What a node of the flat layout left: a session at version 1 with
	// n = 4, and the done key of its create.
	const id = "0123456789abcdef0123456789abcdef"
	flatKey := func(k string) string {
		h := sha256.Sum256([]byte(k))
		return path.Join(cfg.Layout.Keys, hex.EncodeToString(h[:]))
	}
	flatSession := path.Join(cfg.Layout.Sessions, id)
	old := time.Now().Add(-2 * time.Hour).UTC()
	for _, d := range []string{cfg.Layout.Sessions, cfg.Layout.Keys} {
		if err := st.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.WriteFile(flatSession, []byte(`{"id":"`+id+`","vars":{"n":4},"version":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	createBody := `{"id":"` + id + `","version":1}`
	rec := fmt.Sprintf(`{"key":"old-create","fingerprint":%q,"state":"done","owner":{"node":"n9","incarnation":"1"},"attempt":"a1","record":1,`+
		`"op":{"kind":"create","session":%q},"created":%q,"done":%q,"response":{"status":201,"body":%s,"set_session":%q}}`,
		session.Fingerprint("POST", "/api/v1/sessions", nil), id, old.Format(time.RFC3339Nano), old.Format(time.RFC3339Nano), createBody, id)
	if err := st.WriteFile(flatKey("old-create"), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	eng := session.NewEngine(cfg.Layout)
	if err := eng.Check(st); err != nil {
		t.Fatalf("the flat layout's files do not check: %v", err)
	}
	c := newCluster()
	m := &member{c: c, self: session.Owner{Node: "n0", Incarnation: "1"}}
	c.set(m.self, session.OwnerLive)
	srv, err := NewServer(cfg, FromStore(st), m)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	// The old create's key answers its stored response.
	resp, body := do(t, "POST", hs.URL+"/api/v1/sessions", key("old-create"), "")
	if resp.StatusCode != 201 || resp.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(body, id) {
		t.Fatalf("retry of the flat layout's create: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", hs.URL+"/api/v1/sessions/"+id, nil, ""); resp.StatusCode != 200 || !strings.Contains(body, `"n":4`) {
		t.Fatalf("flat session: %d %s", resp.StatusCode, body)
	}
	vars := "/api/v1/sessions/" + id + "/vars/n"
	if resp, body := do(t, "POST", hs.URL+vars, key("new-add"), `{"op":"add","value":3}`); resp.StatusCode != 200 || !strings.Contains(body, `"value":7`) {
		t.Fatalf("add to the flat session: %d %s", resp.StatusCode, body)
	}
	// Changed where it is; the new key went into a shard.
	if b, err := st.ReadFile(flatSession); err != nil || !strings.Contains(string(b), `"n":7`) {
		t.Fatalf("flat session file after the add: %q %v", b, err)
	}
	if _, err := st.Stat(cfg.Layout.SessionFile(id)); err == nil {
		t.Fatal("the flat session was copied into a shard")
	}
	if _, err := st.Stat(cfg.Layout.KeyFile("new-add")); err != nil {
		t.Fatalf("new key: %v", err)
	}
	if _, err := st.Stat(flatKey("new-add")); err == nil {
		t.Fatal("a new key was made in the flat layout")
	}
	// The same key again: replayed, not applied twice.
	if resp, body := do(t, "POST", hs.URL+vars, key("new-add"), `{"op":"add","value":3}`); resp.StatusCode != 200 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s", resp.StatusCode, body)
	}
	// The same old key with another request: 422.
	if resp, body := do(t, "POST", hs.URL+vars, key("old-create"), `{"op":"add","value":3}`); resp.StatusCode != 422 {
		t.Fatalf("old key reused: %d %s", resp.StatusCode, body)
	}
	if err := eng.Check(st); err != nil {
		t.Fatal(err)
	}
	// A delete removes the flat file.
	if resp, body := do(t, "DELETE", hs.URL+"/api/v1/sessions/"+id, key("del"), ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	if _, err := st.Stat(flatSession); err == nil {
		t.Fatal("deleted flat session still there")
	}
	// The collector takes the old key, in the flat layout, and leaves the
	// fresh ones.
	n, err := srv.API().Collect(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("collect: %d %v, want 1", n, err)
	}
	if _, err := st.Stat(flatKey("old-create")); err == nil {
		t.Fatal("old flat key not collected")
	}
	names, err := cfg.Layout.KeyNames(st)
	if err != nil || len(names) != 2 {
		t.Fatalf("keys left: %v %v, want the add's and the delete's", names, err)
	}
	if err := eng.Check(st); err != nil {
		t.Fatal(err)
	}
}

// Two nodes, each adding to its own session with a fresh key per request,
// never take a sessions directory's lock from each other, nor the keys
// directory's: rewriting a session takes its directory PR, and the keys
// are made in the shards (whose locks do move: a key's shard is its hash's).
func TestNodesOnDifferentSessionsKeepTheirDirectoryLocks(t *testing.T) {
	t.Parallel()
	b := newStoreBackend(t)
	cfg := testConfig(t)
	c := newCluster()
	var lockers []*countingLocker
	var stores []*store.Store
	var urls []string
	for i := range 2 {
		name := fmt.Sprintf("n%d/1", i)
		cl := &countingLocker{Locker: b.lm.Node(name), asked: map[string]int{}}
		scfg := store.DefaultConfig(b.dev, i, cl)
		scfg.Logger = testlog.New(t, name)
		scfg.Handlers = map[string]store.Handler{session.RecordIntent: RecoveryHandler(cfg)}
		st, err := store.Open(context.Background(), scfg)
		if err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		b.all = append(b.all, st)
		b.mu.Unlock()
		m := &member{c: c, self: session.Owner{Node: fmt.Sprintf("n%d", i), Incarnation: "1"}}
		c.set(m.self, session.OwnerLive)
		srv, err := NewServer(cfg, FromStore(st), m)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		lockers, stores, urls = append(lockers, cl), append(stores, st), append(urls, hs.URL)
	}
	// Each node makes its session, then adds twice, turn about: the
	// directories' locks settle PR on both (a create took its shard EX;
	// the first reads of the other node take it back to PR).
	ids := make([]string, 2)
	for i := range 2 {
		ids[i] = createSession(t, urls[i], fmt.Sprintf("create-%d", i))
	}
	for r := range 2 {
		for i := range 2 {
			if resp, body := do(t, "POST", urls[i]+"/api/v1/sessions/"+ids[i]+"/vars/n", key(fmt.Sprintf("warm-%d-%d", i, r)), `{"op":"add","value":1}`); resp.StatusCode != 200 {
				t.Fatalf("add: %d %s", resp.StatusCode, body)
			}
		}
	}
	dirs := map[string]uint64{}
	for _, d := range append([]string{cfg.Layout.Keys}, cfg.Layout.Dirs()...) {
		if strings.HasPrefix(d, cfg.Layout.Sessions) || d == cfg.Layout.Keys {
			dirs[d] = inodeOf(t, stores[0], d)
		}
	}
	asked := func(i int) map[string]int {
		m := map[string]int{}
		for d, ino := range dirs {
			m[d] = lockers[i].inodeAsks(ino)
		}
		return m
	}
	before := []map[string]int{asked(0), asked(1)}
	const adds = 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*adds)
	for i := range 2 {
		wg.Go(func() {
			for r := range adds {
				req, _ := http.NewRequest("POST", urls[i]+"/api/v1/sessions/"+ids[i]+"/vars/n", strings.NewReader(`{"op":"add","value":1}`))
				req.Header.Set("Idempotency-Key", fmt.Sprintf(`"add-%d-%d"`, i, r))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- fmt.Errorf("node %d add %d: %w", i, r, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("node %d add %d: %s", i, r, resp.Status)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	after := []map[string]int{asked(0), asked(1)}
	for i := range 2 {
		for d := range dirs {
			if n := after[i][d] - before[i][d]; n != 0 {
				t.Errorf("node %d asked for the lock of %s %d times in %d adds to its own session, want 0", i, d, n, adds)
			}
		}
		if resp, body := do(t, "GET", urls[1-i]+"/api/v1/sessions/"+ids[i], nil, ""); !strings.Contains(body, fmt.Sprintf(`"n":%d`, adds+2)) {
			t.Fatalf("session %d read on the other node: %d %s", i, resp.StatusCode, body)
		}
	}
	if err := session.NewEngine(cfg.Layout).Check(stores[0]); err != nil {
		t.Fatal(err)
	}
}

// A request's Apply rewrites the key record Begin made by the file's
// identity: it takes no lock of the key's shard, which another node
// making a key there in between took from this one.
func TestApplyLeavesTheKeyShard(t *testing.T) {
	t.Parallel()
	b := newStoreBackend(t)
	cfg := testConfig(t)
	var lockers []*countingLocker
	var stores []Store
	for i := range 2 {
		name := fmt.Sprintf("n%d/1", i)
		cl := &countingLocker{Locker: b.lm.Node(name), asked: map[string]int{}}
		scfg := store.DefaultConfig(b.dev, i, cl)
		scfg.Logger = testlog.New(t, name)
		st, err := store.Open(context.Background(), scfg)
		if err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		b.all = append(b.all, st)
		b.mu.Unlock()
		lockers, stores = append(lockers, cl), append(stores, FromStore(st))
	}
	if err := makeLayoutDirs(stores[0], cfg.Layout); err != nil {
		t.Fatal(err)
	}
	eng := session.NewEngine(cfg.Layout)
	// Two keys of one shard.
	keyA := "key-a"
	var keyB string
	for i := 0; keyB == ""; i++ {
		if k := fmt.Sprintf("key-b-%d", i); path.Dir(cfg.Layout.KeyFile(k)) == path.Dir(cfg.Layout.KeyFile(keyA)) {
			keyB = k
		}
	}
	shard := path.Dir(cfg.Layout.KeyFile(keyA))
	begin := func(i int, k string) session.Decision {
		t.Helper()
		var d session.Decision
		self := session.Owner{Node: fmt.Sprintf("n%d", i), Incarnation: "1"}
		err := stores[i].Update(context.Background(), func(tx session.Tx) error {
			var err error
			d, err = eng.Begin(tx, session.Request{Key: k, Fingerprint: "fp-" + k, Attempt: "at-" + k,
				Op: session.Op{Kind: session.OpCreate, Session: fmt.Sprintf("%032x", i+1)}}, self,
				func(session.Owner) session.OwnerState { return session.OwnerLive }, time.Now())
			return err
		})
		if err != nil || d.Kind != session.Proceed {
			t.Fatalf("begin %s on n%d: %v %v", k, i, d.Kind, err)
		}
		return d
	}
	dA := begin(0, keyA)
	if dA.Intent.KeyFile == (session.FileID{}) {
		t.Fatal("Begin on the store left no identity of the key's file")
	}
	begin(1, keyB) // takes the shard's lock from n0
	// The shard's inode as n1, which holds its lock now, sees it.
	shardIno := uint64(0)
	err := stores[1].(storeAdapter).View(context.Background(), func(tx *store.Tx) error {
		fi, err := tx.Stat(shard)
		if err == nil {
			shardIno = fi.Sys().(store.FileStat).Ino
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before := lockers[0].inodeAsks(shardIno)
	var resp session.Response
	err = stores[0].Update(context.Background(), func(tx session.Tx) error {
		var err error
		resp, err = eng.Apply(tx, dA.Intent, time.Now())
		return err
	})
	if err != nil || resp.Status != 201 {
		t.Fatalf("apply: %+v %v", resp, err)
	}
	if n := lockers[0].inodeAsks(shardIno) - before; n != 0 {
		t.Fatalf("n0's apply asked for the lock of the key's shard %s %d times, want 0", shard, n)
	}
	// The record is done where it was made, and found by name on n1.
	var rec *session.KeyRecord
	err = stores[1].Update(context.Background(), func(tx session.Tx) error {
		var err error
		rec, err = eng.ReadKey(tx, keyA)
		return err
	})
	if err != nil || rec == nil || rec.State != session.KeyDone || rec.Response.Status != 201 {
		t.Fatalf("key %s read on n1: %+v %v", keyA, rec, err)
	}
}

// A Begin goes in its key shard's own group commit lane while another node
// may hold the shard's lock, and in the common lane once this node does.
func TestBeginLaneFollowsTheShardsLock(t *testing.T) {
	t.Parallel()
	b := newStoreBackend(t)
	cfg := testConfig(t)
	c := newCluster()
	var apis []*API
	for i := range 2 {
		m := &member{c: c, self: session.Owner{Node: fmt.Sprintf("n%d", i), Incarnation: "1"}}
		c.set(m.self, session.OwnerLive)
		st := b.open(t, i, fmt.Sprintf("n%d/1", i), cfg)
		if err := makeLayoutDirs(st, cfg.Layout); err != nil {
			t.Fatal(err)
		}
		api, err := NewAPI(cfg, st, m)
		if err != nil {
			t.Fatal(err)
		}
		apis = append(apis, api)
	}
	shard := path.Dir(cfg.Layout.KeyFile("k1"))
	// n0 made the shards (it holds their locks EX); n1 found them made.
	if got := apis[0].beginLane("k1"); got != "" {
		t.Fatalf("n0's lane for k1: %q, want the common lane", got)
	}
	if got := apis[1].beginLane("k1"); got != shard {
		t.Fatalf("n1's lane for k1: %q, want %s", got, shard)
	}
	hs := httptest.NewServer(apis[1])
	defer hs.Close()
	createSession(t, hs.URL, "k1") // n1 makes k1's record: the shard's lock is n1's now
	if got := apis[1].beginLane("k1"); got != "" {
		t.Fatalf("n1's lane for k1 after its create: %q, want the common lane", got)
	}
	if got := apis[0].beginLane("k1"); got != shard {
		t.Fatalf("n0's lane for k1 after n1's create: %q, want %s", got, shard)
	}
}

// A store with no wholly free region for a shard (its allocation groups
// smaller than a region) still gets its shards, made plainly.
func TestLayoutOnAStoreWithoutFreeRegions(t *testing.T) {
	t.Parallel()
	dev, err := blockdev.NewMem(2048*store.BlockSize, 512)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Format(context.Background(), dev, store.FormatOptions{Slots: 2, AGBlocks: 128, Align: 1}); err != nil {
		t.Fatal(err)
	}
	scfg := store.DefaultConfig(dev, 0, store.NewMemLocks().Node("n0"))
	scfg.Logger = testlog.New(t, "n0")
	st, err := store.Open(context.Background(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.MkdirApart("probe", 0o700); !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("MkdirApart on groups of 128 blocks: %v, want ErrNoSpace", err)
	}
	cfg := testConfig(t)
	if err := makeLayoutDirs(FromStore(st), cfg.Layout); err != nil {
		t.Fatal(err)
	}
	for _, d := range cfg.Layout.Dirs() {
		if fi, err := st.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("layout directory %s: %v", d, err)
		}
	}
}
