package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestStatusJSONKeepsIDsAndOrder: shoald status --json prints 64-bit lease
// IDs with every digit and the fields in the order the admin API sent them.
func TestStatusJSONKeepsIDsAndOrder(t *testing.T) {
	const status = `{"cluster":"c","node":"node1","lease":6930092223873997826,"members":[{"name":"node2","lease":"6930092223873997827","revision":9007199254740993}],"errors":[]}`
	const recs = `[{"node":"node3","lease":6930092223873997825,"attempts":1}]`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/status":
			w.Write([]byte(status))
		case "/api/recoveries":
			w.Write([]byte(recs))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	out := captureStdout(t, func() error {
		cmd := newStatusCmd()
		cmd.SetArgs([]string{"--admin", srv.URL, "--json"})
		return cmd.Execute()
	})
	for _, want := range []string{"6930092223873997826", `"6930092223873997827"`, "9007199254740993", "6930092223873997825"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lost %s:\n%s", want, out)
		}
	}
	order := []string{`"cluster"`, `"node"`, `"lease"`, `"members"`, `"errors"`, `"recoveries"`}
	last := -1
	for _, k := range order {
		i := strings.Index(out, k)
		if i <= last {
			t.Fatalf("field %s out of the API's order:\n%s", k, out)
		}
		last = i
	}
	if _, err := statusJSON([]byte(`[1]`), []byte(`[]`)); err == nil {
		t.Error("a status that is not an object was accepted")
	}
	if _, err := statusJSON([]byte(`{}`), []byte(`nope`)); err == nil {
		t.Error("recoveries that are not JSON were accepted")
	}
	if got, err := statusJSON([]byte(`{}`), []byte(`[]`)); err != nil || !bytes.Contains(got, []byte(`"recoveries": []`)) {
		t.Errorf("empty status: %s %v", got, err)
	}
}

// captureStdout runs fn with os.Stdout sent to a pipe and returns what it
// wrote.
func captureStdout(t *testing.T, fn func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(r)
		done <- b.String()
	}()
	ferr := fn()
	os.Stdout = old
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatalf("%v\n%s", ferr, out)
	}
	return out
}
