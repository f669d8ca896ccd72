package web

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ha/shoal/web/session"
)

func key(k string) map[string]string { return map[string]string{"Idempotency-Key": `"` + k + `"`} }

func createSession(t testing.TB, u, k string) string {
	t.Helper()
	resp, body := do(t, "POST", u+"/api/v1/sessions", key(k), "")
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	var v struct{ ID string }
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v.ID
}

func TestSessionsAPI(t *testing.T) {
	c := newCluster()
	_, hs1, _ := newTestServer(t, c, 1, testConfig(t))
	_, hs2, _ := newTestServer(t, c, 2, testConfig(t))

	resp, body := do(t, "POST", hs1.URL+"/api/v1/sessions", key("create-1"), "")
	if resp.StatusCode != 201 || !strings.Contains(resp.Header.Get("Set-Cookie"), SessionCookie+"=") {
		t.Fatalf("create: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	var created struct{ ID string }
	json.Unmarshal([]byte(body), &created)
	id := created.ID
	// The retry on the other node: the same answer, marked replayed.
	resp, body2 := do(t, "POST", hs2.URL+"/api/v1/sessions", key("create-1"), "")
	if resp.StatusCode != 201 || body2 != body || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replayed create: %d %s %v", resp.StatusCode, body2, resp.Header)
	}
	vars := hs1.URL + "/api/v1/sessions/" + id + "/vars/"
	resp, body = do(t, "POST", vars+"count", key("add-1"), `{"op":"add","value":2}`)
	if resp.StatusCode != 200 || body != `{"id":"`+id+`","name":"count","value":2,"version":2}`+"\n" {
		t.Fatalf("add: %d %s", resp.StatusCode, body)
	}
	do(t, "POST", vars+"count", key("add-2"), `{"op":"add","value":-5}`)
	do(t, "POST", vars+"cart", key("app-1"), `{"op":"append","value":{"sku":"apple"}}`)
	do(t, "POST", vars+"name", key("set-1"), `{"op":"set","value":"ann"}`)
	resp, body = do(t, "GET", hs2.URL+"/api/v1/sessions/"+id, nil, "")
	if resp.StatusCode != 200 || body != `{"id":"`+id+`","vars":{"cart":[{"sku":"apple"}],"count":-3,"name":"ann"},"version":5}`+"\n" {
		t.Fatalf("get: %d %s", resp.StatusCode, body)
	}
	// The same key with another request: 422; nothing applied.
	if resp, body := do(t, "POST", vars+"count", key("add-1"), `{"op":"add","value":3}`); resp.StatusCode != 422 {
		t.Fatalf("reused key: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "DELETE", hs2.URL+"/api/v1/sessions/"+id, key("del-1"), ""); resp.StatusCode != 204 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", hs1.URL+"/api/v1/sessions/"+id, nil, ""); resp.StatusCode != 404 {
		t.Fatalf("get after delete: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "DELETE", hs1.URL+"/api/v1/sessions/"+id, key("del-1"), ""); resp.StatusCode != 204 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replayed delete: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "DELETE", hs1.URL+"/api/v1/sessions/"+id, key("del-2"), ""); resp.StatusCode != 404 {
		t.Fatalf("second delete: %d", resp.StatusCode)
	}
}

// Bad input gets a clear 4xx and stores nothing.
func TestSessionsBadInput(t *testing.T) {
	c := newCluster()
	cfg := testConfig(t)
	cfg.BodyLimit = 1024
	_, hs, _ := newTestServer(t, c, 1, cfg)
	id := createSession(t, hs.URL, "c")
	vars := hs.URL + "/api/v1/sessions/" + id + "/vars/"
	before := storedFiles(t, c)
	cases := []struct {
		name, method, url string
		hdr               map[string]string
		body              string
		want              int
	}{
		{"no key", "POST", vars + "a", nil, `{"op":"set","value":1}`, 400},
		{"unquoted key", "POST", vars + "a", map[string]string{"Idempotency-Key": "abc"}, `{"op":"set","value":1}`, 400},
		{"empty key", "POST", vars + "a", map[string]string{"Idempotency-Key": `""`}, `{"op":"set","value":1}`, 400},
		{"key with space", "POST", vars + "a", map[string]string{"Idempotency-Key": `"a b"`}, `{"op":"set","value":1}`, 400},
		{"key with escape", "POST", vars + "a", map[string]string{"Idempotency-Key": `"a\"b"`}, `{"op":"set","value":1}`, 400},
		{"long key", "POST", vars + "a", key(strings.Repeat("k", 256)), `{"op":"set","value":1}`, 400},
		{"malformed json", "POST", vars + "a", key("b1"), `{"op":"set","value":`, 400},
		{"trailing data", "POST", vars + "a", key("b2"), `{"op":"set","value":1} {}`, 400},
		{"unknown field", "POST", vars + "a", key("b3"), `{"op":"set","value":1,"x":2}`, 400},
		{"unknown op", "POST", vars + "a", key("b4"), `{"op":"mul","value":2}`, 400},
		{"no value", "POST", vars + "a", key("b5"), `{"op":"set"}`, 400},
		{"add a string", "POST", vars + "a", key("b6"), `{"op":"add","value":"1"}`, 400},
		{"add a float", "POST", vars + "a", key("b7"), `{"op":"add","value":1.5}`, 400},
		{"huge body", "POST", vars + "a", key("b8"), `{"op":"set","value":"` + strings.Repeat("x", 2000) + `"}`, 413},
		{"bad var name", "POST", vars + "a$b", key("b9"), `{"op":"set","value":1}`, 400},
		{"long var name", "POST", vars + strings.Repeat("v", 65), key("b10"), `{"op":"set","value":1}`, 400},
		{"bad session id", "POST", hs.URL + "/api/v1/sessions/XYZ/vars/a", key("b11"), `{"op":"set","value":1}`, 400},
		{"get bad id", "GET", hs.URL + "/api/v1/sessions/..%2f..%2fweb", nil, "", 400},
		{"dot segments", "GET", hs.URL + "/api/v1/sessions/x/../" + id, nil, "", 400},
		{"delete with body", "DELETE", hs.URL + "/api/v1/sessions/" + id, key("b12"), "x", 400},
		{"create bad json", "POST", hs.URL + "/api/v1/sessions", key("b13"), "{", 400},
		{"put", "PUT", hs.URL + "/api/v1/sessions/" + id, key("b14"), "", 405},
		{"unknown route", "GET", hs.URL + "/api/v1/nope", nil, "", 404},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, hs.URL, strings.NewReader(tc.body))
		req.URL.Opaque = "//" + strings.TrimPrefix(tc.url, "http://")
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if after := storedFiles(t, c); after != before {
		t.Fatalf("bad input stored something:\nbefore %s\nafter  %s", before, after)
	}
	// Two Idempotency-Key fields.
	req, _ := http.NewRequest("POST", vars+"a", strings.NewReader(`{"op":"set","value":1}`))
	req.Header.Add("Idempotency-Key", `"k1"`)
	req.Header.Add("Idempotency-Key", `"k2"`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("two keys: %d", resp.StatusCode)
	}
}

// storedFiles lists every file of the volume with its size.
func storedFiles(t testing.TB, c *cluster) string {
	var b strings.Builder
	err := fs.WalkDir(c.vol.Node(0), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			fi, _ := d.Info()
			b.WriteString(p + ":" + string(rune('0'+fi.Size()%10)) + " ")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// slowStore is a store whose transactions take delay to commit, as the
// journal's writes and flushes do on a loaded machine; it honours the
// context as the store does.
type slowStore struct {
	Store
	delay time.Duration
}

func (s slowStore) Update(ctx context.Context, fn func(tx session.Tx) error) error {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Update(ctx, fn)
}

// A journal write slower than RecoveryWait is not cut short: the intent is
// journaled and the request answered (a shorter deadline on the journal
// write answered 503 to every request on a loaded machine, and could cut a
// committed transaction's writes in place).
func TestSlowJournalIsNotCut(t *testing.T) {
	t.Parallel()
	c := newCluster()
	m := &member{c: c, self: session.Owner{Node: "n1", Incarnation: "1"}}
	c.set(m.self, session.OwnerLive)
	cfg := testConfig(t) // RecoveryWait 200ms
	s, err := NewServer(cfg, slowStore{c.vol.Node(1), 1200 * time.Millisecond}, m)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	id := createSession(t, hs.URL, "create-slow")
	resp, body := do(t, "POST", hs.URL+"/api/v1/sessions/"+id+"/vars/n", key("add-slow"), `{"op":"add","value":1}`)
	if resp.StatusCode != 200 {
		t.Fatalf("add through a slow journal: %d %s", resp.StatusCode, body)
	}
}
