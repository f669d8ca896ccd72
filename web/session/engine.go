package session

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// Tx is the part of a store transaction the engine uses. Files changed
// through it and records logged with Log commit together or not at all
// (the store's Update); ReadFile returns an error wrapping fs.ErrNotExist for
// a missing file. Every file the transaction touches is held under the
// store's exclusive lock until it commits, so a transaction that reads and
// writes a session file runs under that session's lock.
type Tx interface {
	ReadFile(name string) ([]byte, error)
	WriteFile(name string, data []byte, perm fs.FileMode) error
	Remove(name string) error
	// Log adds an application record to the transaction and returns its
	// id; the record stays pending until a later transaction of this node
	// acknowledges it (Ack). If the node dies first, recovery hands it to
	// the handler of its kind, exactly once.
	Log(kind string, payload []byte) (uint64, error)
	// Ack marks record id of this node's journal as done.
	Ack(id uint64)
}

// RecordIntent is the kind of the application record that journals a
// request's intent (an Intent in JSON) before it is applied.
const RecordIntent = "web.intent"

// Owner is the node incarnation that works on a request. A node that
// restarts is a new incarnation: its old requests belong to a dead owner.
type Owner struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
}

func (o Owner) String() string { return o.Node + "/" + o.Incarnation }

// OwnerState is what the cluster knows about an owner.
type OwnerState int

// Owner states.
const (
	// OwnerLive: the incarnation holds its lease; it alone may finish its
	// requests.
	OwnerLive OwnerState = iota + 1
	// OwnerRecovering: the incarnation is dead (or suspected) and its
	// journal is not yet replayed; nobody may touch its requests.
	OwnerRecovering
	// OwnerRecovered: the incarnation was fenced and its journal replayed
	// and handed to the recovery handler.
	OwnerRecovered
)

func (s OwnerState) String() string {
	switch s {
	case OwnerLive:
		return "live"
	case OwnerRecovering:
		return "recovering"
	case OwnerRecovered:
		return "recovered"
	}
	return fmt.Sprintf("OwnerState(%d)", int(s))
}

// KeyState is the state of an idempotency key's record.
type KeyState string

// Key states.
const (
	KeyInProgress KeyState = "in-progress"
	KeyDone       KeyState = "done"
)

// KeyRecord is the stored record of an idempotency key.
type KeyRecord struct {
	Key         string   `json:"key"`
	Fingerprint string   `json:"fingerprint"`
	State       KeyState `json:"state"`
	Owner       Owner    `json:"owner"`
	// Attempt names the Begin that wrote the record; an intent acts on the
	// record only while the attempts match.
	Attempt string `json:"attempt"`
	// Record is the id of the intent record in the owner's journal.
	Record  uint64    `json:"record"`
	Op      Op        `json:"op"`
	Created time.Time `json:"created"`
	// Done and Response are set once the operation was applied.
	Done     time.Time `json:"done,omitzero"`
	Response *Response `json:"response,omitempty"`
}

// Intent is the journaled intent of a request (RecordIntent).
type Intent struct {
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint"`
	Owner       Owner  `json:"owner"`
	Attempt     string `json:"attempt"`
	Op          Op     `json:"op"`
	// KeyFile is the identity of the key record's file as Begin left it,
	// when the store can name files so (IdentityTx): Apply then rewrites
	// it without looking its name up. Not journaled: recovery looks the
	// key up by name.
	KeyFile FileID `json:"-"`
}

// Request is a mutating request as the engine sees it.
type Request struct {
	// Key is the idempotency key (already validated, see ParseKey).
	Key string
	// Fingerprint identifies the request (Fingerprint of method, path and
	// body); the same key with another fingerprint is refused.
	Fingerprint string
	Op          Op
	// Attempt is a name unique to this Begin (random).
	Attempt string
}

// DecisionKind says what Begin decided.
type DecisionKind int

// Decision kinds and the answers they map to
// (draft-ietf-httpapi-idempotency-key-header-07, sections 2.6 and 2.7).
const (
	// Proceed: the intent is journaled; apply it (Apply) and answer.
	Proceed DecisionKind = iota + 1
	// Replay: the key's request finished; answer its stored response with
	// Idempotent-Replayed: true.
	Replay
	// Mismatch: the key was used with another request: 422.
	Mismatch
	// Busy: a live node works on the key's request: 409.
	Busy
	// Recovering: the key's request belongs to a dead node whose journal is
	// not replayed yet: wait and ask again, or answer 503 with Retry-After.
	Recovering
)

func (k DecisionKind) String() string {
	switch k {
	case Proceed:
		return "proceed"
	case Replay:
		return "replay"
	case Mismatch:
		return "mismatch"
	case Busy:
		return "busy"
	case Recovering:
		return "recovering"
	}
	return fmt.Sprintf("DecisionKind(%d)", int(k))
}

// Decision is the outcome of Begin.
type Decision struct {
	Kind DecisionKind
	// Intent is the journaled intent (Proceed), and Record the id of its
	// record in this node's journal.
	Intent Intent
	Record uint64
	// Response is the stored response (Replay).
	Response Response
	// Owner is the key's owner (Busy, Recovering).
	Owner Owner
}

// Errors of the engine.
var (
	// ErrNotOwner: the key record no longer belongs to this intent's
	// attempt (its owner was declared dead and another node took the
	// request over). Nothing was applied; the client must retry.
	ErrNotOwner = errors.New("session: the key record belongs to another attempt")
	// ErrCorrupt: a stored record cannot be decoded. Not safe to retry.
	ErrCorrupt = errors.New("session: stored record is damaged")
)

// Engine applies the exactly-once rules. It keeps no state of its own: all
// of it is in the store, read and written through a Tx.
type Engine struct {
	Layout Layout
	// MaxSessionBytes bounds a session's encoded size (0: no bound).
	MaxSessionBytes int
	// Flat says the store may hold files of the flat layout (see
	// Layout): every session and key is looked for there first. A store
	// without any (Layout.HasFlat) never gets one, so a server that found
	// none at its start leaves them unlooked for.
	Flat bool
}

// NewEngine returns an engine over layout with a 1 MiB session bound,
// looking for files of the flat layout too.
func NewEngine(layout Layout) *Engine {
	return &Engine{Layout: layout, MaxSessionBytes: 1 << 20, Flat: true}
}

// flat is name when the engine looks at the flat layout, else "".
func (e *Engine) flat(name string) string {
	if !e.Flat {
		return ""
	}
	return name
}

// Fingerprint is the request fingerprint of
// draft-ietf-httpapi-idempotency-key-header-07 section 2.4: the SHA-256 of the
// method, the path and the body.
func Fingerprint(method, urlPath string, body []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%d\n", method, urlPath, len(body))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// ReadKey reads the record of key; nil when there is none.
func (e *Engine) ReadKey(tx Tx, key string) (*KeyRecord, error) {
	_, rec, err := e.findKey(tx, key, false)
	return rec, err
}

// keyLoc is where a key record is, or is to be made: a file name, or a
// file's identity (IdentityTx).
type keyLoc struct {
	name string
	id   FileID
}

// findKey reads the record of key (nil when there is none) and says in
// which file it is, or is to be made; with create the read is for a create
// (readForCreate).
func (e *Engine) findKey(tx reader, key string, create bool) (keyLoc, *KeyRecord, error) {
	name, b, err := find(tx, e.flat(e.Layout.flatKeyFile(key)), e.Layout.KeyFile(key), create)
	if err != nil || b == nil {
		return keyLoc{name: name}, nil, err
	}
	rec, err := decodeKey(name, b)
	return keyLoc{name: name}, rec, err
}

// keyOf reads the record of intent in's key: by the identity of its file
// when Begin left one and tx can (taking no lock of the key's directory,
// which other nodes' creates take from each other), else by name.
func (e *Engine) keyOf(tx Tx, in Intent) (keyLoc, *KeyRecord, error) {
	itx, ok := tx.(IdentityTx)
	if !ok || in.KeyFile == (FileID{}) {
		return e.findKey(tx, in.Key, false)
	}
	loc := keyLoc{id: in.KeyFile}
	b, err := itx.ReadFileID(in.KeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return loc, nil, nil
	}
	if err != nil {
		return loc, nil, err
	}
	rec, err := decodeKey(e.Layout.KeyFile(in.Key), b)
	return loc, rec, err
}

func readKeyFile(tx reader, name string) (*KeyRecord, error) {
	b, err := tx.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeKey(name, b)
}

func decodeKey(name string, b []byte) (*KeyRecord, error) {
	var r KeyRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: key record %s: %v", ErrCorrupt, name, err)
	}
	return &r, nil
}

// writeKey writes r where loc says (findKey's, keyOf's).
func (e *Engine) writeKey(tx Tx, loc keyLoc, r *KeyRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if loc.id != (FileID{}) {
		return tx.(IdentityTx).WriteFileID(loc.id, b)
	}
	return tx.WriteFile(loc.name, b, 0o600)
}

// ReadSession reads session id; nil when it does not exist.
func (e *Engine) ReadSession(tx interface {
	ReadFile(string) ([]byte, error)
}, id string) (*Session, error) {
	_, s, err := e.findSession(tx, id, false)
	return s, err
}

// findSession reads session id (nil when it does not exist) and says in
// which file it is, or is to be made; with create the read is for a
// create or a remove (readForCreate).
func (e *Engine) findSession(tx reader, id string, create bool) (string, *Session, error) {
	if !ValidID(id) {
		// Not a name the layout has a file for; no such session.
		return "", nil, nil
	}
	name, b, err := find(tx, e.flat(e.Layout.flatSessionFile(id)), e.Layout.SessionFile(id), create)
	if err != nil || b == nil {
		return name, nil, err
	}
	var s Session
	if err := json.Unmarshal(b, &s); err != nil {
		return "", nil, fmt.Errorf("%w: session %s: %v", ErrCorrupt, id, err)
	}
	if s.Vars == nil {
		s.Vars = map[string]json.RawMessage{}
	}
	return name, &s, nil
}

// Begin decides what to do with a request. On Proceed it has written the
// key record "in progress" owned by self and logged the intent (RecordIntent)
// in tx: both commit with tx, before the operation is applied. liveness
// tells the state of another owner.
func (e *Engine) Begin(tx Tx, req Request, self Owner, liveness func(Owner) OwnerState, now time.Time) (Decision, error) {
	// The key is usually new: read for its create.
	file, rec, err := e.findKey(tx, req.Key, true)
	if err != nil {
		return Decision{}, err
	}
	if rec != nil {
		if rec.Fingerprint != req.Fingerprint {
			return Decision{Kind: Mismatch, Owner: rec.Owner}, nil
		}
		if rec.State == KeyDone {
			return Decision{Kind: Replay, Response: *rec.Response}, nil
		}
		if rec.Owner == self {
			return Decision{Kind: Busy, Owner: rec.Owner}, nil
		}
		switch liveness(rec.Owner) {
		case OwnerLive:
			return Decision{Kind: Busy, Owner: rec.Owner}, nil
		case OwnerRecovering:
			return Decision{Kind: Recovering, Owner: rec.Owner}, nil
		}
		// The owner was fenced and its journal handed to recovery, yet its
		// key is in progress: not applied (effect and "done" commit
		// together), and nobody else may apply it: take it over.
	}
	in := Intent{Key: req.Key, Fingerprint: req.Fingerprint, Owner: self, Attempt: req.Attempt, Op: req.Op}
	b, err := json.Marshal(in)
	if err != nil {
		return Decision{}, err
	}
	id, err := tx.Log(RecordIntent, b)
	if err != nil {
		return Decision{}, err
	}
	nr := &KeyRecord{Key: req.Key, Fingerprint: req.Fingerprint, State: KeyInProgress, Owner: self,
		Attempt: req.Attempt, Record: id, Op: req.Op, Created: now.UTC()}
	if err := e.writeKey(tx, file, nr); err != nil {
		return Decision{}, err
	}
	if itx, ok := tx.(IdentityTx); ok {
		if in.KeyFile, err = itx.FileID(file.name); err != nil {
			return Decision{}, err
		}
	}
	return Decision{Kind: Proceed, Intent: in, Record: id}, nil
}

// Apply applies a journaled intent of this node: the operation on the
// session and the response in the key record, in tx. A key already done
// gives its stored response (nothing applied again); a key taken over by
// another attempt gives ErrNotOwner.
func (e *Engine) Apply(tx Tx, in Intent, now time.Time) (Response, error) {
	file, rec, err := e.keyOf(tx, in)
	if err != nil {
		return Response{}, err
	}
	if rec == nil || rec.Attempt != in.Attempt || rec.Owner != in.Owner {
		return Response{}, ErrNotOwner
	}
	if rec.State == KeyDone {
		return *rec.Response, nil
	}
	resp, err := e.applyRecord(tx, file, rec, now)
	if err != nil {
		return Response{}, err
	}
	// The intent is done: recovery must not hand it over.
	tx.Ack(rec.Record)
	return resp, nil
}

func (e *Engine) applyRecord(tx Tx, keyFile keyLoc, rec *KeyRecord, now time.Time) (Response, error) {
	// A create or a delete changes the session's directory: read for it.
	changesDir := rec.Op.Kind == OpCreate || rec.Op.Kind == OpDelete
	file, s, err := e.findSession(tx, rec.Op.Session, changesDir)
	if err != nil {
		return Response{}, err
	}
	ns, resp := ApplyOp(s, rec.Op, e.MaxSessionBytes)
	switch {
	case ns == nil && s != nil:
		if err := tx.Remove(file); err != nil {
			return Response{}, err
		}
	case ns != nil && ns != s:
		b, err := json.Marshal(ns)
		if err != nil {
			return Response{}, err
		}
		if err := tx.WriteFile(file, b, 0o600); err != nil {
			return Response{}, err
		}
	}
	rec.State = KeyDone
	rec.Done = now.UTC()
	rec.Response = &resp
	if err := e.writeKey(tx, keyFile, rec); err != nil {
		return Response{}, err
	}
	return resp, nil
}

// Abandon gives up an intent this node could not apply: its key record is
// removed in tx (the operation was not applied, so a retry may begin
// afresh). An intent no longer owning its key is left alone.
func (e *Engine) Abandon(tx Tx, in Intent) error {
	file, rec, err := e.findKey(tx, in.Key, true)
	if err != nil {
		return err
	}
	if rec == nil || rec.Attempt != in.Attempt || rec.Owner != in.Owner || rec.State != KeyInProgress {
		return nil
	}
	tx.Ack(rec.Record)
	return tx.Remove(file.name)
}

// RecoverOutcome says what Recover did with a dead node's intent.
type RecoverOutcome int

// Recover outcomes.
const (
	// Applied: the intent had no result; it was applied now, once.
	Applied RecoverOutcome = iota + 1
	// FoundApplied: the intent's result was already stored.
	FoundApplied
	// Gone: the key record is gone (abandoned or collected) or belongs to
	// another attempt: nothing to do.
	Gone
)

func (o RecoverOutcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case FoundApplied:
		return "found-applied"
	case Gone:
		return "gone"
	}
	return fmt.Sprintf("RecoverOutcome(%d)", int(o))
}

// Recover handles one RecordIntent record of a dead node's journal, in a
// transaction of the recovering node. Handing the same record again changes
// nothing more (FoundApplied).
func (e *Engine) Recover(tx Tx, payload []byte, now time.Time) (RecoverOutcome, Response, error) {
	var in Intent
	if err := json.Unmarshal(payload, &in); err != nil {
		return 0, Response{}, fmt.Errorf("%w: intent record: %v", ErrCorrupt, err)
	}
	file, rec, err := e.findKey(tx, in.Key, false)
	if err != nil {
		return 0, Response{}, err
	}
	if rec == nil || rec.Attempt != in.Attempt || rec.Owner != in.Owner {
		return Gone, Response{}, nil
	}
	if rec.State == KeyDone {
		return FoundApplied, *rec.Response, nil
	}
	resp, err := e.applyRecord(tx, file, rec, now)
	if err != nil {
		return 0, Response{}, err
	}
	return Applied, resp, nil
}

// Collect removes the key records named (names relative to Layout.Keys,
// as Layout.KeyNames gives them) that finished at least retention before
// now; records in progress are never collected. It returns how many it
// removed.
func (e *Engine) Collect(tx Tx, names []string, now time.Time, retention time.Duration) (int, error) {
	n := 0
	for _, name := range names {
		file := path.Join(e.Layout.Keys, name)
		// Read for its remove (the directory's lock exclusively).
		b, err := readForCreate(tx, file)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, err
		}
		rec, err := decodeKey(file, b)
		if err != nil {
			return n, err
		}
		if rec == nil || rec.State != KeyDone || now.Sub(rec.Done) < retention {
			continue
		}
		if err := tx.Remove(file); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Check verifies the stored sessions and key records, of both layouts:
// every record decodes, sits under the name of its key or id, is in a
// known state with the fields that state needs, and every done success on
// a live session has a version the session reached. It returns the first
// problem found.
func (e *Engine) Check(fsys fs.FS) error {
	sessions := map[string]*Session{}
	names, err := files(fsys, e.Layout.Sessions)
	if err != nil {
		return err
	}
	for _, name := range names {
		file := path.Join(e.Layout.Sessions, name)
		id := path.Base(name)
		if !ValidID(id) || (file != e.Layout.SessionFile(id) && file != e.Layout.flatSessionFile(id)) {
			return fmt.Errorf("%w: session file %s is not where a session is kept", ErrCorrupt, file)
		}
		_, s, err := e.findSession(fsReader{fsys}, id, false)
		if err != nil {
			return err
		}
		if s == nil || s.ID != id || s.Version < 1 {
			return fmt.Errorf("%w: session file %s holds no session %s of a version >= 1", ErrCorrupt, file, id)
		}
		if sessions[id] != nil {
			return fmt.Errorf("%w: session %s is kept in both layouts", ErrCorrupt, id)
		}
		sessions[s.ID] = s
	}
	if names, err = e.Layout.KeyNames(fsys); err != nil {
		return err
	}
	for _, name := range names {
		file := path.Join(e.Layout.Keys, name)
		rec, err := readKeyFile(fsReader{fsys}, file)
		if err != nil {
			return err
		}
		if rec == nil {
			continue // collected meanwhile
		}
		if e.Layout.KeyFile(rec.Key) != file && e.Layout.flatKeyFile(rec.Key) != file {
			return fmt.Errorf("%w: key record %s holds key %q", ErrCorrupt, file, rec.Key)
		}
		switch rec.State {
		case KeyInProgress:
			if rec.Response != nil {
				return fmt.Errorf("%w: key %q in progress has a response", ErrCorrupt, rec.Key)
			}
		case KeyDone:
			if rec.Response == nil || rec.Response.Status < 200 || rec.Response.Status > 599 || rec.Done.IsZero() {
				return fmt.Errorf("%w: key %q done without a response", ErrCorrupt, rec.Key)
			}
			if rec.Response.Status == http.StatusOK {
				var a VarAnswer
				if err := json.Unmarshal(rec.Response.Body, &a); err != nil {
					return fmt.Errorf("%w: key %q response: %v", ErrCorrupt, rec.Key, err)
				}
				if s := sessions[a.ID]; s != nil && a.Version > s.Version {
					return fmt.Errorf("%w: key %q answered version %d, session %s is at %d", ErrCorrupt, rec.Key, a.Version, s.ID, s.Version)
				}
			}
		default:
			return fmt.Errorf("%w: key %q in unknown state %q", ErrCorrupt, rec.Key, rec.State)
		}
		if rec.Attempt == "" || rec.Owner.Node == "" || !ValidID(rec.Op.Session) {
			return fmt.Errorf("%w: key %q lacks owner, attempt or session", ErrCorrupt, rec.Key)
		}
	}
	return nil
}

type fsReader struct{ fsys fs.FS }

func (r fsReader) ReadFile(name string) ([]byte, error) { return fs.ReadFile(r.fsys, name) }
