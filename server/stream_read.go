package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/policy"
)

// errLineTooLong is returned by lineReader.next for a line over the cap.
var errLineTooLong = errors.New("line too long")

// streamReadBuffer is the bufio buffer size; lines longer than this are
// assembled in lineReader.buf, which never grows past the message cap.
const streamReadBuffer = 4 << 10

// lineReader splits a stream into newline-delimited messages of bounded size.
// Unlike bufio.Scanner it reports an oversized line as soon as the cap is
// passed, having buffered no more than the cap, and it accepts "\n" and
// "\r\n" terminators and a last line without one.
type lineReader struct {
	br  *bufio.Reader
	max int    // cap on one line, terminator excluded
	buf []byte // assembles a line longer than the bufio buffer
}

func newLineReader(r io.Reader, maxBytes int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, min(streamReadBuffer, maxBytes+2)), max: maxBytes}
}

// next returns the next line that is not blank, trimmed of JSON whitespace,
// in a slice of its own. It returns io.EOF at the end of the stream and
// errLineTooLong for a line longer than the cap.
func (l *lineReader) next() ([]byte, error) {
	for {
		line, err := l.readLine()
		if err != nil {
			return nil, err
		}
		line = bytes.Trim(line, " \t\r\n")
		if cap(l.buf) > streamReadBuffer {
			// A long line was assembled in a buffer of its own, which is
			// not reused (see readLine): hand it over rather than copy up
			// to MaxMessageBytes again.
			l.buf = nil
			if len(line) > 0 {
				return line, nil
			}
			continue
		}
		if len(line) > 0 {
			return bytes.Clone(line), nil
		}
	}
}

// readLine returns one line without its terminator, aliasing internal buffers.
func (l *lineReader) readLine() ([]byte, error) {
	// Don't keep a large buffer alive for the rest of the session: a long
	// line gets a buffer of its own (next hands it over).
	if cap(l.buf) > streamReadBuffer {
		l.buf = nil
	}
	l.buf = l.buf[:0]
	for {
		frag, err := l.br.ReadSlice('\n')
		// The line may carry "\r\n" on top of the cap; anything more is too long.
		if len(l.buf)+len(frag) > l.max+2 {
			return nil, errLineTooLong
		}
		l.grow(len(frag))
		l.buf = append(l.buf, frag...)
		switch {
		case err == nil:
			return l.checked(bytes.TrimSuffix(bytes.TrimSuffix(l.buf, []byte("\n")), []byte("\r")))
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(l.buf) > 0:
			return l.checked(l.buf) // a last line without terminator
		default:
			return nil, err
		}
	}
}

// checked returns line, or errLineTooLong if it is over the cap.
func (l *lineReader) checked(line []byte) ([]byte, error) {
	if len(line) > l.max {
		return nil, errLineTooLong
	}
	return line, nil
}

// grow makes room for n more bytes in l.buf without ever allocating more than
// the cap plus a terminator, which append's growth policy could overshoot.
func (l *lineReader) grow(n int) {
	need := len(l.buf) + n
	if need <= cap(l.buf) {
		return
	}
	newCap := min(max(2*cap(l.buf), need, 4<<10), l.max+2)
	buf := make([]byte, len(l.buf), newCap)
	copy(buf, l.buf)
	l.buf = buf
}

// readLoop reads and dispatches messages until the stream ends. It reports
// whether the peer closed the stream cleanly (EOF), in which case in-flight
// requests are allowed to finish.
func (s *StreamSession) readLoop(ctx context.Context) (peerClosed bool) {
	lines := newLineReader(s.rw, s.opts.MaxMessageBytes)
	for {
		line, err := lines.next()
		switch {
		case err == nil:
			s.touch() // before dispatch takes a slot: the idle watch sees one or the other
			if !s.dispatch(ctx, line) {
				return false
			}
		case errors.Is(err, errLineTooLong):
			s.log.WarnContext(ctx, "stream message over size limit, closing session",
				streamLogSession, s.id, streamLogLimit, s.opts.MaxMessageBytes)
			s.send(encodeError(nil, mcp.INVALID_REQUEST,
				fmt.Sprintf("message exceeds the limit of %d bytes per JSON-RPC message; closing the connection", s.opts.MaxMessageBytes),
				map[string]any{"maxMessageBytes": s.opts.MaxMessageBytes}))
			s.end(fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, s.opts.MaxMessageBytes))
			return false
		case errors.Is(err, io.EOF):
			s.end(nil)
			return s.endCause() == nil // EOF can also follow a Close
		default:
			s.end(fmt.Errorf("server: read stream: %w", err)) // no-op if Close or ctx caused it
			return false
		}
	}
}

// maxIDBytes caps a request id, as it appears on the wire. Every answer
// echoes the id, and mcp-go copies it several times per request (a map key
// built with fmt.Sprintf, a re-encoding with HTML escaping that turns each
// '<' into six bytes): an id near MaxMessageBytes made one request cost over
// ten times the message cap (issue 7, TestResourceBounds). Ids are
// identifiers: numbers, UUIDs.
const maxIDBytes = 1 << 10

// envelope is the part of a JSON-RPC message needed to route it. Params,
// result and error, which may be nearly the whole message, are not copied:
// routing needs only to know whether they are there.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method json.RawMessage `json:"method"`
	Result present         `json:"result"`
	Error  present         `json:"error"`
}

// present records that a member is in a JSON object (null included),
// without keeping a copy of its value.
type present bool

func (p *present) UnmarshalJSON([]byte) error {
	*p = true
	return nil
}

// dispatch routes one message: requests to a handler goroutine (waiting for
// a free slot first, which is the backpressure), notifications inline so that
// they keep their order, and malformed input to an error response. It
// returns false when the session is ending.
func (s *StreamSession) dispatch(ctx context.Context, line []byte) bool {
	if !json.Valid(line) {
		s.send(encodeError(nil, mcp.PARSE_ERROR, "Parse error", nil))
		return true
	}
	if line[0] != '{' {
		msg := "Invalid Request: expected a JSON-RPC message object"
		if line[0] == '[' {
			msg = "Invalid Request: JSON-RPC batches are not supported"
		}
		s.send(encodeError(nil, mcp.INVALID_REQUEST, msg, nil))
		return true
	}
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil || !validID(env.ID) {
		s.send(encodeError(nil, mcp.INVALID_REQUEST, "Invalid Request: bad id", nil))
		return true
	}
	if len(env.ID) > maxIDBytes {
		s.send(encodeError(nil, mcp.INVALID_REQUEST,
			fmt.Sprintf("Invalid Request: id longer than %d bytes", maxIDBytes), map[string]any{"maxIdBytes": maxIDBytes}))
		return true
	}
	var method string
	if len(env.Method) > 0 && json.Unmarshal(env.Method, &method) != nil {
		s.send(encodeError(env.ID, mcp.INVALID_REQUEST, "Invalid Request: method is not a string", nil))
		return true
	}
	hasID := len(env.ID) > 0 && !bytes.Equal(env.ID, []byte("null"))

	switch {
	case method == "" && hasID && bool(env.Result || env.Error):
		// A response to a server-initiated request. This session sends none
		// (see StreamSession), so there is nothing waiting for it.
		s.log.DebugContext(ctx, "dropping unsolicited response", streamLogSession, s.id)
		return true
	case method == "":
		s.send(encodeError(env.ID, mcp.INVALID_REQUEST, "Invalid Request: no method", nil))
		return true
	case !hasID:
		// Notifications are handled in order on the read loop, as mcp-go's
		// StdioServer does: notifications/initialized must take effect
		// before the requests that follow it are dispatched.
		if resp := s.handle(ctx, nil, line); resp != nil {
			s.send(resp)
		}
		return true
	}

	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		s.end(context.Cause(ctx))
		return false
	}
	listen := method == string(mcp.MethodSubscriptionsListen) && isModernRequest(line)
	// The line's bytes stay counted until its answer is handed to the
	// writer: see StreamOptions.MaxInFlightBytes. Not a listen request's:
	// it lasts until the peer cancels it, and the cancellation could never
	// be read if a large request were waiting behind it for those bytes.
	// At most one is open, so what it holds is bounded all the same.
	size := len(line)
	if listen {
		size = 0
	}
	if err := s.inflight.acquire(ctx, size); err != nil {
		<-s.slots
		s.end(err)
		return false
	}
	if listen && !s.beginListen(env.ID) {
		<-s.slots
		s.send(encodeError(env.ID, mcp.INVALID_REQUEST,
			"Invalid Request: a subscriptions/listen stream is already open on this connection", nil))
		return true
	}
	s.handlers.Add(1)
	go func() {
		defer s.handlers.Done()
		defer func() { <-s.slots }()
		defer s.touch() // the idle time counts from the answer, not the request
		defer s.inflight.release(size)
		resp := s.handle(ctx, env.ID, line)
		line = nil // not needed while the answer waits for the writer
		if listen {
			s.endListen() // before the final response: nothing after it is tagged
		}
		if resp != nil {
			s.send(resp)
		}
	}()
	return true
}

// isModernRequest reports whether a request's params declare protocol
// 2026-07-28 or later in _meta, as mcp-go decides per request.
func isModernRequest(msg []byte) bool {
	var m struct {
		Params struct {
			Meta struct {
				ProtocolVersion string `json:"io.modelcontextprotocol/protocolVersion"`
			} `json:"_meta"`
		} `json:"params"`
	}
	return json.Unmarshal(msg, &m) == nil && mcp.IsModernProtocol(m.Params.Meta.ProtocolVersion)
}

// validID reports whether a JSON-RPC id is absent, null, a string or a number.
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return true
	}
	switch c := id[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9', bytes.Equal(id, []byte("null")):
		return true
	}
	return false
}

// handle runs one message through mcp-go and returns the encoded response,
// or nil if there is none. A panicking handler must not take the process
// down: a request gets an internal error, a notification nothing.
func (s *StreamSession) handle(ctx context.Context, id json.RawMessage, msg []byte) (out []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ctx, "panic in MCP message handler",
				streamLogSession, s.id, streamLogError, fmt.Sprint(r))
			out = nil
			if id != nil {
				out = encodeError(id, mcp.INTERNAL_ERROR, "Internal error", nil)
			}
		}
	}()
	// One decision slot per message: the audit hooks read the
	// authorization decision of this request, never another's.
	resp := s.srv.HandleMessage(policy.WithSlot(ctx), msg)
	if resp == nil {
		return nil
	}
	out, err := encodeLine(resp)
	if err != nil {
		s.log.ErrorContext(ctx, "encoding MCP response", streamLogSession, s.id, streamLogError, err)
		if id == nil {
			return nil
		}
		return encodeError(id, mcp.INTERNAL_ERROR, "Internal error: response could not be encoded", nil)
	}
	return out
}
