package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
)

// OpKind names a session operation.
type OpKind string

// Operation kinds. Create and Delete act on a whole session; Set, Add and
// Append on one of its variables.
const (
	OpCreate OpKind = "create"
	OpDelete OpKind = "delete"
	// OpSet replaces the variable's value with any JSON value.
	OpSet OpKind = "set"
	// OpAdd adds a signed 64-bit integer to an integer variable (a missing
	// variable counts as 0).
	OpAdd OpKind = "add"
	// OpAppend appends a JSON value to an array variable (a missing variable
	// counts as the empty array).
	OpAppend OpKind = "append"
)

// Op is one mutating operation on a session, as journaled in an intent.
type Op struct {
	Kind    OpKind `json:"kind"`
	Session string `json:"session"`
	// Name is the variable (Set, Add, Append only).
	Name string `json:"name,omitempty"`
	// Value is the operand (Set, Add, Append only), compact JSON.
	Value json.RawMessage `json:"value,omitempty"`
}

// Session is a session's stored state.
type Session struct {
	ID   string                     `json:"id"`
	Vars map[string]json.RawMessage `json:"vars"`
	// Version counts the mutations applied to the session: 1 after create.
	Version uint64 `json:"version"`
}

// Response is the answer to a mutating request, stored under its
// idempotency key and sent again to every retry.
type Response struct {
	Status int `json:"status"`
	// Body is the JSON body (empty for 204).
	Body json.RawMessage `json:"body,omitempty"`
	// SetSession is the session id a create hands to the client as a
	// cookie and a Location.
	SetSession string `json:"set_session,omitempty"`
}

// ErrBadRequest reports input rejected before anything was stored; the same
// request will be rejected again, so a retry is pointless.
var ErrBadRequest = errors.New("session: bad request")

var (
	idPattern   = regexp.MustCompile(`^[0-9a-f]{32}$`)
	namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
)

// ValidID reports whether id has the form of a session id: 32 lower-case hex
// digits (128 random bits).
func ValidID(id string) bool { return idPattern.MatchString(id) }

// ValidName reports whether name may name a variable: 1 to 64 characters of
// A-Z a-z 0-9 _ . -
func ValidName(name string) bool { return namePattern.MatchString(name) }

// VarRequest is the JSON body of POST /api/v1/sessions/{id}/vars/{name}.
type VarRequest struct {
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value"`
}

// ParseVarOp builds the operation of a variable request from the session id,
// the variable name and the JSON body. Errors wrap ErrBadRequest and say what
// is wrong.
func ParseVarOp(id, name string, body []byte) (Op, error) {
	if !ValidID(id) {
		return Op{}, fmt.Errorf("%w: session id must be 32 lower-case hex digits", ErrBadRequest)
	}
	if !ValidName(name) {
		return Op{}, fmt.Errorf("%w: variable name must be 1 to 64 of A-Z a-z 0-9 _ . -", ErrBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var vr VarRequest
	if err := dec.Decode(&vr); err != nil {
		return Op{}, fmt.Errorf("%w: body is not a JSON object {\"op\", \"value\"}: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return Op{}, fmt.Errorf("%w: body has data after the JSON object", ErrBadRequest)
	}
	if len(vr.Value) == 0 {
		return Op{}, fmt.Errorf("%w: value is missing", ErrBadRequest)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, vr.Value); err != nil {
		return Op{}, fmt.Errorf("%w: value: %v", ErrBadRequest, err)
	}
	op := Op{Session: id, Name: name, Value: compact.Bytes()}
	switch OpKind(vr.Op) {
	case OpSet:
		op.Kind = OpSet
	case OpAdd:
		op.Kind = OpAdd
		if _, err := parseInt(op.Value); err != nil {
			return Op{}, fmt.Errorf("%w: add needs an integer value: %v", ErrBadRequest, err)
		}
	case OpAppend:
		op.Kind = OpAppend
	default:
		return Op{}, fmt.Errorf("%w: unknown op %q (want set, add or append)", ErrBadRequest, vr.Op)
	}
	return op, nil
}

func parseInt(v json.RawMessage) (int64, error) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is not a signed 64-bit integer", v)
	}
	return n, nil
}

// Problem is an RFC 9457 problem detail, the body of every error answer.
type Problem struct {
	Type   string `json:"type,omitempty"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// ProblemResponse builds an error Response with a problem-detail body.
func ProblemResponse(status int, title, detail string) Response {
	b, _ := json.Marshal(Problem{Title: title, Status: status, Detail: detail})
	return Response{Status: status, Body: b}
}

// VarAnswer is the body answering a variable operation.
type VarAnswer struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Value   json.RawMessage `json:"value"`
	Version uint64          `json:"version"`
}

// ApplyOp applies op to the session s (nil when it does not exist) and
// returns the session to store (nil: remove it) and the response. It is a
// pure function: the same inputs give the same outputs on every node and in
// recovery. maxBytes bounds the encoded session (413 when exceeded).
func ApplyOp(s *Session, op Op, maxBytes int) (*Session, Response) {
	switch op.Kind {
	case OpCreate:
		if s != nil {
			// Ids are 128 random bits; a clash means the id was reused.
			return s, ProblemResponse(http.StatusConflict, "Session exists", "session "+op.Session+" already exists")
		}
		ns := &Session{ID: op.Session, Vars: map[string]json.RawMessage{}, Version: 1}
		b, _ := json.Marshal(map[string]any{"id": ns.ID, "version": ns.Version})
		return ns, Response{Status: http.StatusCreated, Body: b, SetSession: ns.ID}
	case OpDelete:
		if s == nil {
			return nil, ProblemResponse(http.StatusNotFound, "No such session", "session "+op.Session+" does not exist")
		}
		return nil, Response{Status: http.StatusNoContent}
	}
	if s == nil {
		return nil, ProblemResponse(http.StatusNotFound, "No such session", "session "+op.Session+" does not exist")
	}
	old, had := s.Vars[op.Name]
	var nv json.RawMessage
	switch op.Kind {
	case OpSet:
		nv = op.Value
	case OpAdd:
		var cur int64
		if had {
			c, err := parseInt(old)
			if err != nil {
				return s, ProblemResponse(http.StatusBadRequest, "Variable is not an integer", "add needs an integer variable: "+err.Error())
			}
			cur = c
		}
		d, err := parseInt(op.Value)
		if err != nil {
			return s, ProblemResponse(http.StatusBadRequest, "Bad value", err.Error())
		}
		if (d > 0 && cur > math.MaxInt64-d) || (d < 0 && cur < math.MinInt64-d) {
			return s, ProblemResponse(http.StatusBadRequest, "Integer overflow", "the sum leaves the signed 64-bit range")
		}
		nv = json.RawMessage(strconv.FormatInt(cur+d, 10))
	case OpAppend:
		var arr []json.RawMessage
		if had {
			if err := json.Unmarshal(old, &arr); err != nil || len(old) == 0 || old[0] != '[' {
				return s, ProblemResponse(http.StatusBadRequest, "Variable is not an array", "append needs an array variable")
			}
		}
		arr = append(arr, op.Value)
		b, _ := json.Marshal(arr)
		nv = b
	default:
		return s, ProblemResponse(http.StatusBadRequest, "Unknown operation", string(op.Kind))
	}
	ns := &Session{ID: s.ID, Vars: make(map[string]json.RawMessage, len(s.Vars)+1), Version: s.Version + 1}
	for k, v := range s.Vars {
		ns.Vars[k] = v
	}
	ns.Vars[op.Name] = nv
	if enc, _ := json.Marshal(ns); maxBytes > 0 && len(enc) > maxBytes {
		return s, ProblemResponse(http.StatusRequestEntityTooLarge, "Session too large",
			fmt.Sprintf("the session would take %d bytes, more than the limit of %d", len(enc), maxBytes))
	}
	b, _ := json.Marshal(VarAnswer{ID: ns.ID, Name: op.Name, Value: nv, Version: ns.Version})
	return ns, Response{Status: http.StatusOK, Body: b}
}
