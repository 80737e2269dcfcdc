package jsonrpc

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Version is the jsonrpc member of every message.
const Version = "2.0"

// Error codes of JSON-RPC 2.0 that nefia answers with itself.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeInternalError  = -32603
)

// EncodeLine encodes v as one line of JSON, newline included. HTML escaping
// is off: nothing here is embedded in HTML, and it made every '<', '>' and
// '&' a peer got echoed back (an unknown method's name, say) six bytes long,
// an answer six times the size of its request (issue 7, TestResourceBounds).
// Newlines, and U+2028 and U+2029 in strings, are still escaped, so the
// framing holds.
func EncodeLine(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// errorResponse is a JSON-RPC error response whose id is echoed byte for byte.
type errorResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   errorDetail     `json:"error"`
}

type errorDetail struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// EncodeError encodes a JSON-RPC error response as one line (EncodeLine);
// a nil id becomes null, as JSON-RPC requires when the request's id could
// not be determined, and a nil data is left out. id must be valid JSON (an
// id taken from a decoded message is) and data plain data.
func EncodeError(id json.RawMessage, code int, message string, data any) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	line, err := EncodeLine(errorResponse{
		JSONRPC: Version,
		ID:      id,
		Error:   errorDetail{Code: code, Message: message, Data: data},
	})
	if err != nil { // a caller's bug: an id that is not JSON, data that cannot be encoded
		panic(fmt.Sprintf("jsonrpc: encoding an error response: %v", err))
	}
	return line
}
