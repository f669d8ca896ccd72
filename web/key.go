package web

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// MaxKeyLength bounds an idempotency key, in characters.
const MaxKeyLength = 255

// ErrBadKey reports a missing or malformed Idempotency-Key header: the
// request was not processed and must be corrected before a retry.
var ErrBadKey = errors.New("web: bad Idempotency-Key")

// ParseKey reads the request's Idempotency-Key header
// (draft-ietf-httpapi-idempotency-key-header-07 section 2.1): exactly one
// field whose value is a Structured Field String (RFC 8941 section 3.3.3),
// such as "8e03978e-40d5-43e8-bc93-6894a57f9324". The key must be 1 to 255
// characters of A-Z a-z 0-9 and - _ . : (the published key format of
// section 5 of the draft, Security Considerations: validate before use).
func ParseKey(h http.Header) (string, error) {
	vals := h.Values("Idempotency-Key")
	switch len(vals) {
	case 0:
		return "", fmt.Errorf("%w: the header is missing; mutating requests need one", ErrBadKey)
	case 1:
	default:
		return "", fmt.Errorf("%w: more than one header field", ErrBadKey)
	}
	v := strings.Trim(vals[0], " \t")
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", fmt.Errorf(`%w: the value must be a quoted string, such as "3f2a..."`, ErrBadKey)
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		c := v[i]
		if c == '\\' {
			// RFC 8941 allows \" and \\ only; neither is a key character.
			return "", fmt.Errorf("%w: escapes are not allowed in a key", ErrBadKey)
		}
		if c == '"' {
			return "", fmt.Errorf("%w: a quote inside the value", ErrBadKey)
		}
		if !keyChar(c) {
			return "", fmt.Errorf("%w: character %q not allowed (A-Z a-z 0-9 - _ . :)", ErrBadKey, c)
		}
		b.WriteByte(c)
	}
	k := b.String()
	if k == "" || len(k) > MaxKeyLength {
		return "", fmt.Errorf("%w: a key has 1 to %d characters", ErrBadKey, MaxKeyLength)
	}
	return k, nil
}

func keyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':'
}
