package iscsi

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// CHAP with MD5 (algorithm 5), RFC 1994 as profiled by RFC 7143 section
// 12.1.3.

const chapMD5 = "5"

// chapResponse computes MD5(id || secret || challenge).
func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// decodeCHAPBinary decodes a CHAP_C or CHAP_R value in hex (0x) or
// base64 (0b) form.
func decodeCHAPBinary(v string) ([]byte, error) {
	switch {
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		b, err := hex.DecodeString(v[2:])
		if err != nil {
			return nil, fmt.Errorf("%w: bad hex CHAP value: %v", ErrProtocol, err)
		}
		return b, nil
	case strings.HasPrefix(v, "0b") || strings.HasPrefix(v, "0B"):
		b, err := base64.StdEncoding.DecodeString(v[2:])
		if err != nil {
			return nil, fmt.Errorf("%w: bad base64 CHAP value: %v", ErrProtocol, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: CHAP value %q is neither 0x hex nor 0b base64", ErrProtocol, v)
}

func encodeCHAPBinary(b []byte) string { return "0x" + hex.EncodeToString(b) }

// chapVerify checks a target's answer to our mutual challenge.
func chapVerify(id byte, secret string, challenge, got []byte) bool {
	return subtle.ConstantTimeCompare(chapResponse(id, secret, challenge), got) == 1
}
