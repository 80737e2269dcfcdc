package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nefia/nefia/internal/jsonrpc"
)

// Private request ids: the bridge's own requests, whose answers are never
// passed to the client. A client would have to use these exact strings to
// collide with them.
const (
	probeID  = "nefia-connect-probe"
	reinitID = "nefia-connect-reinit"
)

var probeLine = []byte(`{"jsonrpc":"2.0","id":"` + probeID + `","method":"ping"}` + "\n")

// message is what the bridge needs to know of one JSON-RPC line.
type message struct {
	kind   kind
	id     string          // canonical id (idKey) of a request or response
	rawID  json.RawMessage // the id as sent, to answer with
	method string
	// cancelled is the canonical id a notifications/cancelled names.
	cancelled string
	// failed is set on a response that carries an error.
	failed bool
}

type kind int

const (
	invalid      kind = iota // not a JSON object: forwarded to the gateway, never to the client
	request                  // method and id: a response is owed
	notification             // method, no id
	response                 // id, no method
)

// parse classifies one line. Batches are invalid here: MCP removed them in
// 2025-06-18 and the gateway refuses them.
func parse(line []byte) message {
	var env jsonrpc.Envelope
	if err := jsonrpc.Decode(line, &env); err != nil {
		return message{}
	}
	method, err := env.MethodName()
	if err != nil {
		return message{} // a method that is not a string
	}
	id, hasID := env.IDKey()
	switch {
	case env.HasMethod() && hasID:
		return message{kind: request, id: id, rawID: env.ID, method: method}
	case env.HasMethod():
		m := message{kind: notification, method: method}
		if m.method == jsonrpc.MethodCancelled {
			m.cancelled, _ = jsonrpc.CancelledID(line)
		}
		return m
	case hasID:
		return message{kind: response, id: id, failed: env.Error == jsonrpc.Present}
	}
	// A response with a null id (a parse error answered by the gateway) owes
	// nothing to anyone but is still JSON-RPC for the client.
	return message{kind: response}
}

// withID returns a request line with its id replaced, for replaying the
// client's initialize under a private id.
func withID(line []byte, id string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return nil, err
	}
	obj["id"], _ = json.Marshal(id)
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// errorResponse is the JSON-RPC error the bridge gives the client for a
// request whose answer was lost with the connection. It is HTML-escaped, as
// the json.Marshal the bridge used before the shared encoding was: the
// same bytes as ever for an id with '<', '>' or '&'.
func errorResponse(id json.RawMessage, msg string) []byte {
	var b bytes.Buffer
	json.HTMLEscape(&b, jsonrpc.EncodeError(id, jsonrpc.CodeInternalError, msg, nil))
	return b.Bytes()
}

// lineReader reads the lines of one side (the client's standard input, the
// gateway's connection), of at most max bytes each.
type lineReader struct {
	r   *jsonrpc.LineReader
	max int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: jsonrpc.NewLineReader(r, max), max: max}
}

// next returns the next line that is not blank, trimmed, in a slice the
// caller owns; a line over the cap is an error wrapping ErrMessageTooLarge.
func (l *lineReader) next() ([]byte, error) {
	line, err := l.r.Next()
	if errors.Is(err, jsonrpc.ErrLineTooLong) {
		return nil, fmt.Errorf("%w (%d bytes)", ErrMessageTooLarge, l.max)
	}
	return line, err
}

// inflight is the set of requests written to the gateway and not yet
// answered, with their raw ids so the bridge can answer them itself, and
// the connection each was written on (after a renewal, the previous
// connection still owes the answers to what was sent on it).
type inflight struct {
	mu  sync.Mutex
	ids map[string]pending
}

type pending struct {
	raw   json.RawMessage
	owner *conn
}

func (f *inflight) add(key string, raw json.RawMessage, owner *conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids == nil {
		f.ids = map[string]pending{}
	}
	f.ids[key] = pending{raw, owner}
}

func (f *inflight) done(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ids, key)
}

// owned counts the requests in flight on c.
func (f *inflight) owned(c *conn) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.ids {
		if p.owner == c {
			n++
		}
	}
	return n
}

// drain empties the set and returns the raw ids it held.
func (f *inflight) drain() []json.RawMessage {
	return f.drainOwner(nil)
}

// drainOwner removes the requests in flight on c (every request when c is
// nil) and returns their raw ids.
func (f *inflight) drainOwner(c *conn) []json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []json.RawMessage
	for key, p := range f.ids {
		if c == nil || p.owner == c {
			out = append(out, p.raw)
			delete(f.ids, key)
		}
	}
	return out
}
