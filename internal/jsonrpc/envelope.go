package jsonrpc

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// MethodCancelled is the notification that cancels a request (MCP
// cancellation); its params.requestId names the request.
const MethodCancelled = "notifications/cancelled"

// Envelope is the part of a JSON-RPC message needed to route it. Params,
// result and error, which may be nearly the whole message, are not copied:
// routing needs only to know whether they are there.
type Envelope struct {
	// ID is the id as sent (compact JSON), nil when the member is absent.
	ID json.RawMessage `json:"id"`
	// Method is the method member as sent, nil when absent; see MethodName.
	Method json.RawMessage `json:"method"`
	// Params, Result and Error say whether those members are there, and
	// null, but keep none of their value.
	Params Member `json:"params"`
	Result Member `json:"result"`
	Error  Member `json:"error"`
}

// Decode decodes the envelope of one message into e, overwriting it. It
// fails for what is not JSON, and for JSON that is not an object (a batch,
// a bare string) except null, which decodes as an empty envelope, as
// encoding/json has it. It accepts an id or method of any type: what to
// make of them is the caller's (see ValidID, MethodName). As encoding/json
// does, it matches member names case-insensitively and keeps the last of
// repeated members. e is the caller's, not returned, so that a message
// costs one envelope on the heap, not two.
func Decode(line []byte, e *Envelope) error {
	*e = Envelope{}
	return json.Unmarshal(line, e)
}

// HasID reports whether the message has an id that is not null: a request
// or a response, not a notification.
func (e *Envelope) HasID() bool {
	return len(e.ID) > 0 && !bytes.Equal(e.ID, []byte("null"))
}

// HasMethod reports whether the message has a method member that is not
// null (it may still not be a string; see MethodName).
func (e *Envelope) HasMethod() bool {
	return len(e.Method) > 0 && !bytes.Equal(e.Method, []byte("null"))
}

// MethodName returns the method, "" when it is absent or null, and an error
// when it is something other than a string.
func (e *Envelope) MethodName() (string, error) {
	var name string
	if len(e.Method) == 0 {
		return "", nil
	}
	err := json.Unmarshal(e.Method, &name)
	return name, err
}

// IDKey returns the canonical form of the id (see IDKey).
func (e *Envelope) IDKey() (string, bool) {
	return IDKey(e.ID)
}

// Member records whether a member is in a JSON object, and whether it is
// null, without keeping a copy of its value.
type Member uint8

// The states of a Member.
const (
	Absent  Member = iota // not in the object
	Null                  // present, null
	Present               // present, not null
)

// UnmarshalJSON records the member as Null or Present.
func (m *Member) UnmarshalJSON(b []byte) error {
	*m = Present
	if bytes.Equal(b, []byte("null")) {
		*m = Null
	}
	return nil
}

// In reports whether the member is in the object, null included.
func (m Member) In() bool { return m != Absent }

// ValidID reports whether a JSON-RPC id is absent, null, a string or a
// number, the only kinds JSON-RPC 2.0 allows.
func ValidID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	switch c := id[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9', bytes.Equal(id, []byte("null")):
		return true
	}
	return false
}

// IDKey returns a canonical form of a JSON-RPC id, so that a request's id
// and its response's compare equal even if the number is spelled
// differently (1 and 1.0) or the string escaped differently ("a" and
// "\u0061"). Strings and numbers never collide. ok is false for an absent
// or null id, and for one that is neither a string nor a number.
func IDKey(raw json.RawMessage) (key string, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return "s:" + s, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return "", false
	}
	if f, err := n.Float64(); err == nil {
		return "n:" + strconv.FormatFloat(f, 'g', -1, 64), true
	}
	return "n:" + n.String(), true
}

// CancelledID returns the canonical key (IDKey) of the request a
// notifications/cancelled message names in params.requestId, and false if
// it names none. It decodes the message a second time, which only the
// (small) cancellations pay for: Envelope keeps no params.
func CancelledID(line []byte) (string, bool) {
	var msg struct {
		Params json.RawMessage `json:"params"`
	}
	if json.Unmarshal(line, &msg) != nil {
		return "", false
	}
	var p struct {
		RequestID json.RawMessage `json:"requestId"`
	}
	if json.Unmarshal(msg.Params, &p) != nil {
		return "", false
	}
	return IDKey(p.RequestID)
}
