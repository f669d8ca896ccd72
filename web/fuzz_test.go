package web

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/shoal-ha/shoal/web/session"
)

// The decoders of request input never panic, and what they accept is what
// the API promises: a key of 1 to 255 allowed characters, an operation with
// a known kind on a valid session and variable.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, `abc`, `""`, `"a\"b"`, `"ü"`, ` "x" `} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{}
		h.Set("Idempotency-Key", v)
		k, err := ParseKey(h)
		if err != nil {
			return
		}
		if len(k) == 0 || len(k) > MaxKeyLength {
			t.Fatalf("accepted key of length %d", len(k))
		}
		for i := 0; i < len(k); i++ {
			if !keyChar(k[i]) {
				t.Fatalf("accepted %q", k)
			}
		}
	})
}

func FuzzParseVarOp(f *testing.F) {
	id := "0123456789abcdef0123456789abcdef"
	for _, s := range []string{`{"op":"add","value":1}`, `{"op":"set","value":{"a":[1,2]}}`, `{"op":"append","value":"x"}`,
		`{"op":"add","value":1e3}`, `{"op":"x"}`, `{`, `{"op":"set","value":1} {}`, `null`} {
		f.Add("count", s)
	}
	f.Fuzz(func(t *testing.T, name, body string) {
		op, err := session.ParseVarOp(id, name, []byte(body))
		if err != nil {
			return
		}
		if !session.ValidName(op.Name) || op.Session != id || len(op.Value) == 0 {
			t.Fatalf("accepted %+v", op)
		}
		switch op.Kind {
		case session.OpSet, session.OpAdd, session.OpAppend:
		default:
			t.Fatalf("accepted kind %q", op.Kind)
		}
		// Whatever was accepted applies without a panic, on a missing and
		// on an existing variable, and an applied op bumps the version.
		s := &session.Session{ID: id, Vars: map[string]json.RawMessage{}, Version: 1}
		for range 2 {
			ns, resp := session.ApplyOp(s, op, 1<<20)
			if resp.Status == http.StatusOK && ns.Version != s.Version+1 {
				t.Fatalf("version %d after %d", ns.Version, s.Version)
			}
			if ns != nil {
				s = ns
			}
		}
	})
}
