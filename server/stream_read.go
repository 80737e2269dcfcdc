package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/internal/jsonrpc"
	"github.com/nefia/nefia/policy"
)

// readLoop reads and dispatches messages until the stream ends, or until
// the loop moves to another goroutine (moved: see runInline). It reports
// whether the peer closed the stream cleanly (EOF), in which case in-flight
// requests are allowed to finish.
func (s *StreamSession) readLoop(ctx context.Context) (peerClosed, moved bool) {
	for {
		line, err := s.rd.lines.Next()
		switch {
		case err == nil && s.finishing.Load():
			// Finish stops the reading with a read deadline, which a line
			// already in the read buffer never meets: nothing read after
			// Finish is served, buffered or not (attack review 3).
			return true, false
		case err == nil:
			s.touch() // before dispatch takes a slot: the idle watch sees one or the other
			switch s.dispatch(ctx, line) {
			case readStop:
				return false, false
			case readMoved:
				return false, true
			}
		case errors.Is(err, jsonrpc.ErrLineTooLong):
			s.log.WarnContext(ctx, "stream message over size limit, closing session",
				streamLogSession, s.id, streamLogLimit, s.opts.MaxMessageBytes)
			s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST,
				fmt.Sprintf("message exceeds the limit of %d bytes per JSON-RPC message; closing the connection", s.opts.MaxMessageBytes),
				map[string]any{"maxMessageBytes": s.opts.MaxMessageBytes}))
			s.end(fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, s.opts.MaxMessageBytes))
			return false, false
		case errors.Is(err, io.EOF):
			s.end(nil)
			return s.endCause() == nil, false // EOF can also follow a Close
		case s.finishing.Load():
			// Finish stopped the reading: like a peer that closed its
			// side, Serve lets the requests in flight finish (Finish
			// bounds how long).
			return true, false
		default:
			s.end(fmt.Errorf("server: read stream: %w", err)) // no-op if Close or ctx caused it
			return false, false
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

// dispatch routes one message: a lone request to the read loop itself
// (runInline), other requests to a handler goroutine of the session's
// workers (waiting for a free slot first, which is the backpressure),
// notifications inline so that they keep their order, and malformed input
// to an error response. It says whether the read loop goes on.
func (s *StreamSession) dispatch(ctx context.Context, line []byte) readNext {
	if len(line) == 0 || line[0] != '{' {
		if !json.Valid(line) {
			s.send(jsonrpc.EncodeError(nil, mcp.PARSE_ERROR, "Parse error", nil))
			return readOn
		}
		msg := "Invalid Request: expected a JSON-RPC message object"
		if line[0] == '[' {
			msg = "Invalid Request: JSON-RPC batches are not supported"
		}
		s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST, msg, nil))
		return readOn
	}
	// No json.Valid first (issue 16 item 3): Decode checks the whole line
	// before decoding anything and fails with a *json.SyntaxError exactly
	// when json.Valid would be false.
	var env jsonrpc.Envelope
	if err := jsonrpc.Decode(line, &env); err != nil || !jsonrpc.ValidID(env.ID) {
		if _, syntax := errors.AsType[*json.SyntaxError](err); syntax {
			s.send(jsonrpc.EncodeError(nil, mcp.PARSE_ERROR, "Parse error", nil))
			return readOn
		}
		s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST, "Invalid Request: bad id", nil))
		return readOn
	}
	if len(env.ID) > maxIDBytes {
		s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST,
			fmt.Sprintf("Invalid Request: id longer than %d bytes", maxIDBytes), map[string]any{"maxIdBytes": maxIDBytes}))
		return readOn
	}
	method, err := env.MethodName()
	if err != nil {
		s.send(jsonrpc.EncodeError(env.ID, mcp.INVALID_REQUEST, "Invalid Request: method is not a string", nil))
		return readOn
	}
	hasID := env.HasID()

	switch {
	case method == "" && hasID && (env.Result.In() || env.Error.In()):
		// A response to a server-initiated request. This session sends none
		// (see StreamSession), so there is nothing waiting for it.
		s.log.DebugContext(ctx, "dropping unsolicited response", streamLogSession, s.id)
		return readOn
	case method == "":
		s.send(jsonrpc.EncodeError(env.ID, mcp.INVALID_REQUEST, "Invalid Request: no method", nil))
		return readOn
	case !hasID:
		// Notifications are handled in order on the read loop, as mcp-go's
		// StdioServer does: notifications/initialized must take effect
		// before the requests that follow it are dispatched.
		if resp := s.handle(ctx, nil, line, nil); resp != nil {
			s.send(resp)
		}
		return readOn
	}

	if ctx.Err() != nil {
		// Closed (revoked, expired, idle, shutdown): a line read from
		// the buffer since is not served, where the select below would
		// pick it or the closed context at random.
		s.end(context.Cause(ctx))
		return readStop
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		s.end(context.Cause(ctx))
		return readStop
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
		return readStop
	}
	if listen && !s.beginListen(env.ID) {
		<-s.slots
		s.send(jsonrpc.EncodeError(env.ID, mcp.INVALID_REQUEST,
			"Invalid Request: a subscriptions/listen stream is already open on this connection", nil))
		return readOn
	}
	s.handlers.Add(1)
	if !listen && len(s.slots) == 1 { // only this request's: it is alone
		return s.runInline(ctx, env.ID, line, size)
	}
	// Its own variable, declared here: the closure clears it, which puts
	// it on the heap, and a line run inline must not pay for that.
	work := line
	s.workers.Go(func() {
		notes := s.notes.Load()
		resp := s.handle(ctx, env.ID, work, nil)
		work = nil // not needed while the answer waits for the writer
		if listen {
			s.endListen() // before the final response: nothing after it is tagged
		}
		s.answer(resp, notes, size)
	})
	return readOn
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

// handle runs one message through mcp-go and returns the encoded response,
// or nil if there is none; a tool's or an empty response is appended to
// dst (see runInline). A panicking handler must not take the process
// down: a request gets an internal error, a notification nothing.
func (s *StreamSession) handle(ctx context.Context, id json.RawMessage, msg, dst []byte) (out []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ctx, "panic in MCP message handler",
				streamLogSession, s.id, streamLogError, fmt.Sprint(r))
			out = nil
			if id != nil {
				out = jsonrpc.EncodeError(id, mcp.INTERNAL_ERROR, "Internal error", nil)
			}
		}
	}()
	// One decision slot per message: the audit hooks read the
	// authorization decision of this request, never another's.
	resp := s.srv.HandleMessage(policy.WithSlot(ctx), msg)
	if resp == nil {
		return nil
	}
	if line, ok := appendToolResponse(dst, resp); ok {
		return line
	}
	if line, ok := appendEmptyResponse(dst, resp); ok {
		return line
	}
	out, err := jsonrpc.EncodeLine(resp)
	if err != nil {
		s.log.ErrorContext(ctx, "encoding MCP response", streamLogSession, s.id, streamLogError, err)
		if id == nil {
			return nil
		}
		return jsonrpc.EncodeError(id, mcp.INTERNAL_ERROR, "Internal error: response could not be encoded", nil)
	}
	return out
}
