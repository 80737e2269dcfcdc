package bridge

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
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

// envelope is the shape shared by every JSON-RPC message.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method *string         `json:"method"`
	Params json.RawMessage `json:"params"`
	Error  json.RawMessage `json:"error"`
}

// parse classifies one line. Batches are invalid here: MCP removed them in
// 2025-06-18 and the gateway refuses them.
func parse(line []byte) message {
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return message{}
	}
	id, hasID := idKey(env.ID)
	switch {
	case env.Method != nil && hasID:
		return message{kind: request, id: id, rawID: env.ID, method: *env.Method}
	case env.Method != nil:
		m := message{kind: notification, method: *env.Method}
		if m.method == "notifications/cancelled" {
			var p struct {
				RequestID json.RawMessage `json:"requestId"`
			}
			if json.Unmarshal(env.Params, &p) == nil {
				m.cancelled, _ = idKey(p.RequestID)
			}
		}
		return m
	case hasID:
		return message{kind: response, id: id, failed: len(env.Error) > 0 && !bytes.Equal(env.Error, []byte("null"))}
	}
	// A response with a null id (a parse error answered by the gateway) owes
	// nothing to anyone but is still JSON-RPC for the client.
	return message{kind: response}
}

// idKey returns a canonical form of a JSON-RPC id, so that the request's
// id and the response's compare equal even if the number is spelled
// differently (1 and 1.0). Strings and numbers never collide.
func idKey(raw json.RawMessage) (string, bool) {
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
// request whose answer was lost with the connection.
func errorResponse(id json.RawMessage, msg string) []byte {
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}{JSONRPC: "2.0", ID: id, Error: struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{Code: -32603, Message: msg}})
	return append(b, '\n')
}

// lineReader reads newline-terminated lines of at most max bytes.
type lineReader struct {
	r   *bufio.Reader
	max int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its terminator (CRLF or LF), skipping
// blank lines. A last line without a terminator is returned before io.EOF.
func (l *lineReader) next() ([]byte, error) {
	for {
		var line []byte
		for {
			chunk, err := l.r.ReadSlice('\n')
			if len(line)+len(chunk) > l.max+2 { // +2: the terminator
				return nil, fmt.Errorf("%w (%d bytes)", ErrMessageTooLarge, l.max)
			}
			line = append(line, chunk...)
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != nil && (len(bytes.TrimSpace(line)) == 0 || !errors.Is(err, io.EOF)) {
				return nil, err
			}
			break
		}
		if len(bytes.TrimRight(line, "\r\n")) > l.max {
			return nil, fmt.Errorf("%w (%d bytes)", ErrMessageTooLarge, l.max)
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			return line, nil
		}
	}
}

// inflight is the set of requests written to the gateway and not yet
// answered, with their raw ids so the bridge can answer them itself.
type inflight struct {
	mu  sync.Mutex
	ids map[string]json.RawMessage
}

func (f *inflight) add(key string, raw json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids == nil {
		f.ids = map[string]json.RawMessage{}
	}
	f.ids[key] = raw
}

func (f *inflight) done(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ids, key)
}

func (f *inflight) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ids)
}

// drain empties the set and returns the raw ids it held.
func (f *inflight) drain() []json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]json.RawMessage, 0, len(f.ids))
	for _, raw := range f.ids {
		out = append(out, raw)
	}
	f.ids = nil
	return out
}
