package upstream

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"time"
)

// sseCursor is what resuming an SSE stream needs (SEP-1699): the id of
// the last event dispatched, and the reconnection time the server asked
// for with a retry field, if any.
type sseCursor struct {
	lastID   string
	retry    time.Duration
	hasRetry bool
}

// readSSE reads a text/event-stream (the WHATWG syntax) and calls handle
// with the data of each message event until handle returns true (then
// ended is false), the stream ends (ended), or reading fails (err). An
// event's id counts once the event is dispatched, one without data too:
// that is how a server primes a client to resume. Data still pending when
// the stream ends is handled as an event, as mcp-go's client does, but
// its id is not recorded. What one event may buffer is bounded by the
// body's limit (bodyLimit counts an SSE body per event).
func readSSE(r io.Reader, cur *sseCursor, handle func(data []byte) bool) (ended bool, err error) {
	br := bufio.NewReader(r)
	var data []byte
	var event, id string
	hasData, hasID := false, false
	dispatch := func() bool {
		done := hasData && (event == "" || event == "message") && handle(data)
		data, event, hasData = data[:0], "", false
		return done
	}
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && (err != io.EOF || len(line) == 0) {
			if err == io.EOF {
				return !dispatch(), nil
			}
			return false, err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if hasID {
				cur.lastID, hasID = id, false
			}
			if dispatch() {
				return false, nil
			}
			continue
		}
		if line[0] == ':' { // a comment, often a keep-alive
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data, hasData = append(data, value...), true
		case "event":
			event = string(value)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				id, hasID = string(value), true
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 32); err == nil {
				cur.retry, cur.hasRetry = time.Duration(ms)*time.Millisecond, true
			}
		}
		if err == io.EOF { // a last line without its newline
			return !dispatch(), nil
		}
	}
}
