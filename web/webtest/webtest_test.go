package webtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// An in-turn client passes over a node that does not answer, stays on the
// next one through its 503s, and never asks the one after it.
func TestInTurnStaysOnTheNodeThatAnswers(t *testing.T) {
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	var asked, other atomic.Int32
	survivor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) <= 3 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"value":1}`))
	}))
	defer survivor.Close()
	third := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other.Add(1)
		w.Write([]byte(`{"value":1}`))
	}))
	defer third.Close()
	c := &Client{HTTP: &http.Client{Timeout: 2 * time.Second}, Backoff: time.Millisecond, InTurn: true,
		Nodes: func() []string { return []string{gone.URL, survivor.URL, third.URL} }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "POST", "/api/v1/sessions/x/vars/n", []byte(`{"op":"add","value":1}`), NewKey())
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusOK || res.Node != survivor.URL || res.Tries != 5 || other.Load() != 0 {
		t.Fatalf("answer %d from %s after %d tries, %d tries on the third node; want 200 from the second node after 5 tries, none on the third",
			res.Status, res.Node, res.Tries, other.Load())
	}
}
