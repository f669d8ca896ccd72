package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/shoal-ha/shoal/store"

	"github.com/shoal-ha/shoal/internal/clock"
	"github.com/shoal-ha/shoal/web/session"
)

// SessionCookie is the cookie a created session's id is handed out in.
const SessionCookie = "shoal_session"

// API serves the sessions API under /api/v1/sessions:
//
//	POST   /api/v1/sessions                    create: 201 {"id","version"}, a cookie
//	GET    /api/v1/sessions/{id}               200 {"id","vars","version"}, 404
//	POST   /api/v1/sessions/{id}/vars/{name}   {"op":"set"|"add"|"append","value":...}:
//	                                           200 {"id","name","value","version"}
//	DELETE /api/v1/sessions/{id}               204, 404
//
// Mutating requests carry an Idempotency-Key (ParseKey) and are applied
// exactly once (package session); reads are answered from the store, which
// is coherent across nodes, so a read started after a mutation was answered
// sees it on every node.
type API struct {
	cfg Config
	st  Store
	mem Membership
	eng *session.Engine
	log hclog.Logger
	clk clock.Clock
	mux *http.ServeMux
	// group runs the requests' transactions (journaling an intent,
	// applying it) together with other requests'.
	group *groupCommit
}

// NewAPI checks cfg and returns the API over st.
func NewAPI(cfg Config, st Store, mem Membership) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	eng := session.NewEngine(cfg.Layout)
	eng.MaxSessionBytes = cfg.MaxSessionBytes
	// Files of the flat layout are looked for only when the store holds
	// any: nodes of that layout never run beside this one, so none
	// appear later.
	flat, err := cfg.Layout.HasFlat(st)
	if err != nil {
		return nil, fmt.Errorf("web: looking for sessions and keys of the flat layout: %w", err)
	}
	eng.Flat = flat
	a := &API{cfg: cfg, st: st, mem: mem, eng: eng, log: cfg.Logger.Named("sessions"), clk: cfg.Clock, mux: http.NewServeMux(),
		group: newGroupCommit(st, cfg.RequestTimeout)}
	a.mux.HandleFunc("POST /api/v1/sessions", a.create)
	a.mux.HandleFunc("GET /api/v1/sessions/{id}", a.get)
	a.mux.HandleFunc("DELETE /api/v1/sessions/{id}", a.remove)
	a.mux.HandleFunc("POST /api/v1/sessions/{id}/vars/{name}", a.vars)
	a.mux.HandleFunc("/api/", a.noRoute)
	return a, nil
}

// noRoute answers a request no route takes: 405 with Allow when the path is
// served for other methods, else 404.
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "/api/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeProblem(w, http.StatusMethodNotAllowed, "Method not allowed", r.Method+" "+r.URL.Path)
		return
	}
	writeProblem(w, http.StatusNotFound, "No such API route", r.URL.Path)
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Engine is the exactly-once engine the API applies requests with.
func (a *API) Engine() *session.Engine { return a.eng }

func writeProblem(w http.ResponseWriter, status int, title, detail string) {
	writeResponse(w, session.ProblemResponse(status, title, detail), false)
}

func writeResponse(w http.ResponseWriter, resp session.Response, replayed bool) {
	h := w.Header()
	switch {
	case resp.Status >= 400:
		h.Set("Content-Type", "application/problem+json")
	case len(resp.Body) > 0:
		h.Set("Content-Type", "application/json")
	}
	h.Set("Cache-Control", "no-store")
	if replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	if resp.SetSession != "" {
		h.Set("Location", "/api/v1/sessions/"+resp.SetSession)
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: resp.SetSession, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	}
	if resp.Status == http.StatusServiceUnavailable || resp.Status == http.StatusConflict {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(resp.Status)
	if len(resp.Body) > 0 {
		w.Write(resp.Body)
		w.Write([]byte("\n"))
	}
}

// readBody reads the body up to the configured limit; false means an answer
// was written.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.BodyLimit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeProblem(w, http.StatusRequestEntityTooLarge, "Body too large",
				fmt.Sprintf("the limit is %d bytes", a.cfg.BodyLimit))
			return nil, false
		}
		writeProblem(w, http.StatusBadRequest, "Unreadable body", err.Error())
		return nil, false
	}
	return b, true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	if len(body) > 0 && !json.Valid(body) {
		writeProblem(w, http.StatusBadRequest, "Malformed JSON", "the body of a create is empty or a JSON value")
		return
	}
	a.mutate(w, r, body, session.Op{Kind: session.OpCreate, Session: randomHex(16)})
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !session.ValidID(id) {
		writeProblem(w, http.StatusBadRequest, "Malformed session id", "a session id is 32 lower-case hex digits")
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	if len(body) > 0 {
		writeProblem(w, http.StatusBadRequest, "Unexpected body", "a delete has no body")
		return
	}
	a.mutate(w, r, body, session.Op{Kind: session.OpDelete, Session: id})
}

func (a *API) vars(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	op, err := session.ParseVarOp(r.PathValue("id"), r.PathValue("name"), body)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "Bad request", err.Error())
		return
	}
	a.mutate(w, r, body, op)
}

// SessionView is the body answering GET /api/v1/sessions/{id}.
type SessionView struct {
	ID      string                     `json:"id"`
	Vars    map[string]json.RawMessage `json:"vars"`
	Version uint64                     `json:"version"`
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !session.ValidID(id) {
		writeProblem(w, http.StatusBadRequest, "Malformed session id", "a session id is 32 lower-case hex digits")
		return
	}
	s, err := a.eng.ReadSession(fsReader{a.st}, id)
	if errors.Is(err, store.ErrFenced) {
		// This node was fenced (its incarnation is being recovered): a
		// GET is safe to retry on another node.
		unavailable(w, "this node is leaving the cluster")
		return
	}
	if err != nil {
		a.log.Error("session read failed", "session", id, "error", err)
		writeProblem(w, http.StatusInternalServerError, "Session unreadable", "the store could not read the session")
		return
	}
	if s == nil {
		writeProblem(w, http.StatusNotFound, "No such session", "session "+id+" does not exist")
		return
	}
	b, _ := json.Marshal(SessionView{ID: s.ID, Vars: s.Vars, Version: s.Version})
	writeResponse(w, session.Response{Status: http.StatusOK, Body: b}, false)
}

type fsReader struct{ fsys fs.FS }

func (r fsReader) ReadFile(name string) ([]byte, error) { return fs.ReadFile(r.fsys, name) }

func (a *API) failpoint(p Point) {
	if a.cfg.Failpoint != nil {
		a.cfg.Failpoint(p)
	}
}

// unavailable answers 503 with Retry-After: the request may be retried with
// the same key.
func unavailable(w http.ResponseWriter, detail string) {
	writeResponse(w, session.ProblemResponse(http.StatusServiceUnavailable, "Try again", detail), false)
}

// mutate runs a mutating request through the exactly-once path: Begin
// (intent journaled), Apply (effect and response stored), answer.
func (a *API) mutate(w http.ResponseWriter, r *http.Request, body []byte, op session.Op) {
	key, err := ParseKey(r.Header)
	if err != nil {
		// draft-ietf-httpapi-idempotency-key-header-07 section 2.7: 400.
		writeProblem(w, http.StatusBadRequest, "Idempotency-Key is missing or malformed", err.Error())
		return
	}
	req := session.Request{Key: key, Fingerprint: session.Fingerprint(r.Method, r.URL.Path, body), Op: op}
	a.failpoint(BeforeIntent)
	// Once the intent is journaled the request is carried to its end even
	// if the client goes away: its answer is stored for the retry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), a.cfg.RequestTimeout)
	defer cancel()
	waitUntil := a.clk.Now().Add(a.cfg.RecoveryWait)
	var d session.Decision
	for {
		req.Attempt = randomHex(12)
		// The request's deadline bounds the transaction; a shorter one
		// would also cut the journal's writes, which a loaded machine may
		// take seconds over, and turn a request that would commit into a
		// 503. Only the wait for a dead node's lock is bounded apart.
		// The key's or session's lock held by a dead node is waited for
		// until waitUntil at most: then the client hears "try again"
		// (nothing was journaled) instead of waiting out the recovery.
		wait := max(waitUntil.Sub(a.clk.Now()), time.Millisecond)
		err := a.group.updateRecoveryBound(ctx, a.beginLane(key), wait, func(tx session.Tx) error {
			var err error
			d, err = a.eng.Begin(tx, req, a.mem.Self(), a.mem.State, a.clk.Now())
			return err
		})
		if errors.Is(err, store.ErrRecovering) {
			unavailable(w, "a node that died holds this request's key or session until its recovery ends; retry with the same Idempotency-Key")
			return
		}
		if err != nil {
			a.log.Warn("journaling an intent failed", "key", key, "error", err)
			unavailable(w, "the request could not be journaled; retry with the same Idempotency-Key")
			return
		}
		if d.Kind != session.Recovering || !a.clk.Now().Before(waitUntil) {
			break
		}
		// The key's request belongs to a dead node whose recovery is
		// running: wait (bounded) for recovery to store its answer.
		select {
		case <-a.clk.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	switch d.Kind {
	case session.Replay:
		writeResponse(w, d.Response, true)
		return
	case session.Mismatch:
		writeProblem(w, http.StatusUnprocessableEntity, "Idempotency-Key is already used",
			"the key was used with another request (method, path or body differ)")
		return
	case session.Busy:
		writeProblem(w, http.StatusConflict, "A request is outstanding for this Idempotency-Key",
			"node "+d.Owner.Node+" is working on it; retry later with the same key")
		return
	case session.Recovering:
		w.Header().Set("Retry-After", strconv.Itoa(1))
		unavailable(w, "node "+d.Owner.Node+" died working on this key; its recovery will store the answer")
		return
	}
	a.failpoint(AfterIntent)
	var resp session.Response
	err = a.group.update(ctx, func(tx session.Tx) error {
		var err error
		resp, err = a.eng.Apply(tx, d.Intent, a.clk.Now())
		return err
	})
	if err != nil {
		a.log.Warn("applying a request failed", "key", key, "error", err)
		if !errors.Is(err, session.ErrNotOwner) {
			// Not applied (or applied and done: Abandon leaves a done key
			// alone): free the key for the client's retry.
			actx, acancel := context.WithTimeout(context.Background(), a.cfg.RequestTimeout)
			if aerr := a.st.Update(actx, func(tx session.Tx) error { return a.eng.Abandon(tx, d.Intent) }); aerr != nil {
				a.log.Error("abandoning a request failed", "key", key, "error", aerr)
			}
			acancel()
		}
		unavailable(w, "the request could not be applied here; retry with the same Idempotency-Key")
		return
	}
	a.failpoint(AfterApply)
	a.failpoint(BeforeAnswer)
	writeResponse(w, resp, false)
}

// RecoverRecord is the store's recovery handler for session.RecordIntent
// records of a dead node's journal: an intent without a result is applied
// once in tx (a transaction of the recovering node) and its response stored.
func (a *API) RecoverRecord(tx session.Tx, payload []byte) error {
	out, resp, err := a.eng.Recover(tx, payload, a.clk.Now())
	if err != nil {
		return err
	}
	a.log.Info("recovered a request", "outcome", out.String(), "status", resp.Status)
	return nil
}

// Collect removes idempotency keys that finished more than KeyRetention
// ago, in transactions of at most 64 keys, and returns how many it removed.
func (a *API) Collect(ctx context.Context) (int, error) {
	all, err := a.cfg.Layout.KeyNames(a.st)
	if err != nil {
		return 0, err
	}
	total := 0
	for i := 0; i < len(all); i += 64 {
		names := all[i:min(i+64, len(all))]
		var n int
		err := a.st.Update(ctx, func(tx session.Tx) error {
			var err error
			n, err = a.eng.Collect(tx, names, a.clk.Now(), a.cfg.KeyRetention)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}
