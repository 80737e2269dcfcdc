package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// maxArgsBytes bounds the arguments kept in one record; larger ones are
// replaced by their hash, so one oversized call cannot bloat the trail.
const maxArgsBytes = 16 << 10

// Redact returns a copy of tool arguments fit for the trail: PEM blocks
// (certificates, CSRs, keys) are replaced by their SHA-256, values of keys
// that name a secret are removed, and oversized arguments are summarized.
// The trail never holds key material or PEM bodies.
func Redact(args map[string]any) map[string]any {
	if len(args) == 0 {
		return nil
	}
	// Size first, cheaply: copying and encoding a multi-MiB argument only to
	// drop it would let one call cost hundreds of MiB of allocation.
	if n := approxSize(args); n > maxArgsBytes {
		return map[string]any{"_omitted": "arguments too large to record", "_bytes": n}
	}
	out := make(map[string]any, len(args))
	for k, v := range args {
		out[k] = redactValue(k, v)
	}
	// appendObject: json.Marshal's bytes without its reflection (issue 16).
	data, err := appendObject(nil, out)
	if err != nil {
		data = nil // what json.Marshal returns with its error
	}
	if err != nil || len(data) > maxArgsBytes {
		sum := sha256.Sum256(data)
		return map[string]any{"_omitted": "arguments too large to record", "_bytes": len(data), "_sha256": hex.EncodeToString(sum[:])}
	}
	return out
}

// Redacted is what Redact records in place of a secret's value.
const Redacted = "[redacted]"

func redactValue(key string, v any) any {
	if SecretKey(key) {
		return Redacted
	}
	switch t := v.(type) {
	case string:
		if strings.Contains(t, "-----BEGIN") || strings.Contains(t, "PRIVATE KEY") {
			sum := sha256.Sum256([]byte(t))
			return "sha256:" + hex.EncodeToString(sum[:])
		}
		return t
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[k] = redactValue(k, v)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, v := range t {
			s[i] = redactValue(key, v)
		}
		return s
	}
	return v
}

// SecretKey reports whether an argument named k holds a secret, whose
// value Redact removes: for records that carry a value apart from its
// name (a completion's typed text is under "value", its argument's name
// under "argument").
func SecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"password", "secret", "token", "private", "passphrase"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return k == "key" || k == "key_pem" || strings.HasSuffix(k, "_key")
}

// approxSize estimates the encoded size of v (string bytes plus keys), to
// refuse oversized arguments before any copy.
func approxSize(v any) int {
	switch t := v.(type) {
	case string:
		return len(t) + 2
	case map[string]any:
		n := 2
		for k, v := range t {
			n += len(k) + 4 + approxSize(v)
		}
		return n
	case []any:
		n := 2
		for _, v := range t {
			n += 1 + approxSize(v)
		}
		return n
	}
	return 8
}

// ToMap turns a result value (a struct, a tool's structured content) into
// the JSON object a record's result holds; nil when it is not an object.
func ToMap(v any) map[string]any {
	if v == nil {
		return nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(data, &m) != nil {
		return nil
	}
	return m
}
