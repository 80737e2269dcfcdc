package jsonrpc

import "encoding/json"

// Encoded is a JSON value already encoded by json.Marshal, for a result a
// server sends many times (the status tool's structured content, rendered
// once per change and caller). Only Marshal makes one, so its bytes are
// json.Marshal's output by construction: valid, compact, with <, >, &,
// U+2028 and U+2029 escaped. An encoder of a whole response can therefore
// append them as they are (AppendTo), where a json.RawMessage from
// elsewhere has to be checked, compacted and escaped on every call (issue
// 16 item 1: that was a sixth of a status call's CPU).
//
// It implements json.Marshaler, so the generic encodings (encoding/json,
// mcp-go's, JSON schema validation) see exactly the value that was
// marshalled. The zero value encodes as null.
type Encoded struct {
	data []byte // json.Marshal's output; never modified after Marshal
}

// Marshal encodes v with json.Marshal and keeps the bytes.
func Marshal(v any) (Encoded, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Encoded{}, err
	}
	return Encoded{data: data}, nil
}

// MarshalJSON returns the encoded bytes (null for the zero value). The
// caller must not modify them: encoding/json only copies them.
func (e Encoded) MarshalJSON() ([]byte, error) {
	if e.data == nil {
		return []byte("null"), nil
	}
	return e.data, nil
}

// AppendTo appends the encoded bytes (null for the zero value) to b:
// exactly what json.Marshal, or an encoder with HTML escaping off, writes
// for e.
func (e Encoded) AppendTo(b []byte) []byte {
	if e.data == nil {
		return append(b, "null"...)
	}
	return append(b, e.data...)
}

// Len returns the length of the encoding.
func (e Encoded) Len() int {
	if e.data == nil {
		return len("null")
	}
	return len(e.data)
}
