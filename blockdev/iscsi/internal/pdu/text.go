package pdu

import (
	"bytes"
	"fmt"
	"strings"
)

// KV is one key=value pair of a text or login data segment.
type KV struct {
	Key, Value string
}

// maxKeyLen is the longest key RFC 7143 section 6.1 allows.
const maxKeyLen = 63

// ParseText splits a text data segment into key=value pairs. Every pair is
// NUL-terminated; a trailing fragment without NUL (a value continued in the
// next PDU) is an error here, the caller joins continued segments first.
func ParseText(data []byte) ([]KV, error) {
	var kvs []KV
	for len(data) > 0 {
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: text key=value without terminating NUL", ErrMalformed)
		}
		pair := data[:i]
		data = data[i+1:]
		if len(pair) == 0 {
			// Padding NULs at the end are tolerated.
			continue
		}
		eq := bytes.IndexByte(pair, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: text pair %q has no key", ErrMalformed, truncate(pair))
		}
		if eq > maxKeyLen {
			return nil, fmt.Errorf("%w: text key longer than %d bytes", ErrMalformed, maxKeyLen)
		}
		if len(pair)-eq-1 > 64*1024 {
			return nil, fmt.Errorf("%w: text value of %q too long", ErrMalformed, pair[:eq])
		}
		kvs = append(kvs, KV{Key: string(pair[:eq]), Value: string(pair[eq+1:])})
	}
	return kvs, nil
}

func truncate(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "..."
	}
	return string(b)
}

// EncodeText joins pairs into a text data segment.
func EncodeText(kvs []KV) []byte {
	var b strings.Builder
	for _, kv := range kvs {
		b.WriteString(kv.Key)
		b.WriteByte('=')
		b.WriteString(kv.Value)
		b.WriteByte(0)
	}
	return []byte(b.String())
}

// Lookup returns the value of key in kvs.
func Lookup(kvs []KV, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}
