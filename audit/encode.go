package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"math"
	"slices"
	"strconv"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// The trail's records are appended to a reused buffer by hand rather than
// through json.Marshal (issue 16 item 1: 7.8 µs a record went mostly to
// reflection, a fresh HMAC and allocations). The bytes must be exactly
// what json.Marshal produces for the Record, because the HMAC covers them
// and readers decode them with encoding/json: TestAppendRecordMatchesMarshal
// and FuzzAppendRecord compare the two. Any value inside args or result
// whose type is not handled here is encoded by json.Marshal itself, which
// is identical by definition.

// sealer seals records with one HMAC reused across records (Reset between
// them). Not safe for concurrent use: the Logger uses it under its mutex.
type sealer struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

func newSealer(key []byte) *sealer {
	return &sealer{h: hmac.New(sha256.New, key)}
}

// appendSealed appends r's line (hash included, no newline) to dst and sets
// r.Hash; the bytes are those seal produces.
func (s *sealer) appendSealed(dst []byte, r *Record) ([]byte, error) {
	r.Hash = ""
	start := len(dst)
	dst, err := appendRecord(dst, r)
	if err != nil {
		return dst[:start], err
	}
	s.h.Reset()
	s.h.Write([]byte(r.PrevHash))
	s.h.Write(dst[start:])
	sum := s.h.Sum(s.sum[:0])
	dst = dst[:len(dst)-1] // drop the closing brace
	dst = append(dst, hashSuffix...)
	at := len(dst)
	dst = hex.AppendEncode(dst, sum)
	r.Hash = string(dst[at:])
	return append(dst, '"', '}'), nil
}

// appendRecord appends r encoded as json.Marshal encodes it (field order,
// omitempty, HTML-safe string escaping).
func appendRecord(b []byte, r *Record) ([]byte, error) {
	b = append(b, `{"id":`...)
	b = jsonrpc.AppendString(b, r.ID)
	b = append(b, `,"time":"`...)
	t, err := r.Time.AppendText(b)
	if err != nil {
		// json.Marshal fails the same way (year outside 0..9999).
		return b, fmt.Errorf("audit: encode record: %w", err)
	}
	b = t
	b = append(b, `","event":`...)
	b = jsonrpc.AppendString(b, r.Event)
	b = appendField(b, `,"tool":`, r.Tool)
	if a := r.Agent; a != nil {
		b = append(b, `,"agent":{`...)
		n := len(b)
		b = appendField(b, `,"name":`, a.Name)
		b = appendField(b, `,"serial":`, a.Serial)
		b = appendField(b, `,"role":`, a.Role)
		if a.Unverified {
			b = append(b, `,"unverified":true`...)
		}
		if len(b) > n {
			b = slices.Delete(b, n, n+1) // the first field's comma
		}
		b = append(b, '}')
	}
	b = appendField(b, `,"session_id":`, r.SessionID)
	b = appendField(b, `,"remote_addr":`, r.RemoteAddr)
	b = appendField(b, `,"transport":`, r.Transport)
	if b, err = appendObjectField(b, `,"args":`, r.Args); err != nil {
		return b, err
	}
	if b, err = appendObjectField(b, `,"result":`, r.Result); err != nil {
		return b, err
	}
	b = appendField(b, `,"outcome":`, r.Outcome)
	b = appendField(b, `,"reason":`, r.Reason)
	b = appendField(b, `,"error":`, r.Error)
	if r.DurationMS != 0 {
		b = append(b, `,"duration_ms":`...)
		if b, err = appendFloat(b, r.DurationMS); err != nil {
			return b, err
		}
	}
	b = appendField(b, `,"decision":`, r.Decision)
	b = appendField(b, `,"upstream":`, r.Upstream)
	b = appendField(b, `,"gateway_id":`, r.GatewayID)
	b = append(b, `,"prev_hash":`...)
	b = jsonrpc.AppendString(b, r.PrevHash)
	b = appendField(b, `,"hash":`, r.Hash)
	return append(b, '}'), nil
}

// appendField appends an omitempty string field.
func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return jsonrpc.AppendString(append(b, name...), v)
}

// appendObjectField appends an omitempty object field.
func appendObjectField(b []byte, key string, m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return b, nil
	}
	return appendObject(append(b, key...), m)
}

// appendObject encodes m with its keys sorted, as json.Marshal does.
func appendObject(b []byte, m map[string]any) ([]byte, error) {
	if m == nil {
		return append(b, "null"...), nil
	}
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(jsonrpc.AppendString(b, k), ':')
		if b, err = appendValue(b, m[k]); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// appendValue encodes the types tool arguments and results are made of by
// hand and hands everything else to json.Marshal.
func appendValue(b []byte, v any) ([]byte, error) {
	var err error
	switch t := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return jsonrpc.AppendString(b, t), nil
	case bool:
		return strconv.AppendBool(b, t), nil
	case float64:
		return appendFloat(b, t)
	case int:
		return strconv.AppendInt(b, int64(t), 10), nil
	case int64:
		return strconv.AppendInt(b, t, 10), nil
	case uint64:
		return strconv.AppendUint(b, t, 10), nil
	case map[string]any:
		return appendObject(b, t)
	case []any:
		if t == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendValue(b, e); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case []string:
		if t == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonrpc.AppendString(b, e)
		}
		return append(b, ']'), nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return b, fmt.Errorf("audit: encode record: %w", err)
	}
	return append(b, data...), nil
}

// appendFloat encodes f as encoding/json's float64 encoder does.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, fmt.Errorf("audit: encode record: json: unsupported value: %s", strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}
