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

// readLoop reads and dispatches messages until the stream ends. It reports
// whether the peer closed the stream cleanly (EOF), in which case in-flight
// requests are allowed to finish.
func (s *StreamSession) readLoop(ctx context.Context) (peerClosed bool) {
	lines := jsonrpc.NewLineReader(s.rw, s.opts.MaxMessageBytes)
	for {
		line, err := lines.Next()
		switch {
		case err == nil:
			s.touch() // before dispatch takes a slot: the idle watch sees one or the other
			if !s.dispatch(ctx, line) {
				return false
			}
		case errors.Is(err, jsonrpc.ErrLineTooLong):
			s.log.WarnContext(ctx, "stream message over size limit, closing session",
				streamLogSession, s.id, streamLogLimit, s.opts.MaxMessageBytes)
			s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST,
				fmt.Sprintf("message exceeds the limit of %d bytes per JSON-RPC message; closing the connection", s.opts.MaxMessageBytes),
				map[string]any{"maxMessageBytes": s.opts.MaxMessageBytes}))
			s.end(fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, s.opts.MaxMessageBytes))
			return false
		case errors.Is(err, io.EOF):
			s.end(nil)
			return s.endCause() == nil // EOF can also follow a Close
		case s.finishing.Load():
			// Finish stopped the reading: like a peer that closed its
			// side, Serve lets the requests in flight finish (Finish
			// bounds how long).
			return true
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

// dispatch routes one message: requests to a handler goroutine of the
// session's workers (waiting for a free slot first, which is the backpressure),
// notifications inline so that they keep their order, and malformed input
// to an error response. It returns false when the session is ending.
func (s *StreamSession) dispatch(ctx context.Context, line []byte) bool {
	if len(line) == 0 || line[0] != '{' {
		if !json.Valid(line) {
			s.send(jsonrpc.EncodeError(nil, mcp.PARSE_ERROR, "Parse error", nil))
			return true
		}
		msg := "Invalid Request: expected a JSON-RPC message object"
		if line[0] == '[' {
			msg = "Invalid Request: JSON-RPC batches are not supported"
		}
		s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST, msg, nil))
		return true
	}
	// No json.Valid first (issue 16 item 3): Decode checks the whole line
	// before decoding anything and fails with a *json.SyntaxError exactly
	// when json.Valid would be false.
	var env jsonrpc.Envelope
	if err := jsonrpc.Decode(line, &env); err != nil || !jsonrpc.ValidID(env.ID) {
		if _, syntax := errors.AsType[*json.SyntaxError](err); syntax {
			s.send(jsonrpc.EncodeError(nil, mcp.PARSE_ERROR, "Parse error", nil))
			return true
		}
		s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST, "Invalid Request: bad id", nil))
		return true
	}
	if len(env.ID) > maxIDBytes {
		s.send(jsonrpc.EncodeError(nil, mcp.INVALID_REQUEST,
			fmt.Sprintf("Invalid Request: id longer than %d bytes", maxIDBytes), map[string]any{"maxIdBytes": maxIDBytes}))
		return true
	}
	method, err := env.MethodName()
	if err != nil {
		s.send(jsonrpc.EncodeError(env.ID, mcp.INVALID_REQUEST, "Invalid Request: method is not a string", nil))
		return true
	}
	hasID := env.HasID()
	var pre []byte // a ping's answer made on the read loop, not yet sent

	switch {
	case method == "" && hasID && (env.Result.In() || env.Error.In()):
		// A response to a server-initiated request. This session sends none
		// (see StreamSession), so there is nothing waiting for it.
		s.log.DebugContext(ctx, "dropping unsolicited response", streamLogSession, s.id)
		return true
	case method == "":
		s.send(jsonrpc.EncodeError(env.ID, mcp.INVALID_REQUEST, "Invalid Request: no method", nil))
		return true
	case !hasID:
		// Notifications are handled in order on the read loop, as mcp-go's
		// StdioServer does: notifications/initialized must take effect
		// before the requests that follow it are dispatched.
		if resp := s.handle(ctx, nil, line); resp != nil {
			s.send(resp)
		}
		return true
	case method == string(mcp.MethodPing) && len(s.slots) == 0:
		// A ping with nothing else in flight (a health probe, the first
		// message of a connection) is answered on the read loop: mcp-go
		// answers it at once, so it needs no handler goroutine of its own
		// (issue 16 item 3). If the writer cannot take the answer at once
		// (a peer that does not read), the answer waits in a slot like any
		// request's, below, so backpressure is unchanged; with requests in
		// flight a ping takes a slot as they do.
		if pre = s.handle(ctx, env.ID, line); pre == nil || s.trySend(pre) {
			return true
		}
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
		s.send(jsonrpc.EncodeError(env.ID, mcp.INVALID_REQUEST,
			"Invalid Request: a subscriptions/listen stream is already open on this connection", nil))
		return true
	}
	s.handlers.Add(1)
	s.workers.Go(func() {
		defer s.handlers.Done()
		defer func() { <-s.slots }()
		defer s.touch() // the idle time counts from the answer, not the request
		defer s.inflight.release(size)
		resp := pre
		if resp == nil {
			resp = s.handle(ctx, env.ID, line)
		}
		line = nil // not needed while the answer waits for the writer
		if listen {
			s.endListen() // before the final response: nothing after it is tagged
		}
		if resp != nil {
			s.send(resp)
		}
	})
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
	if line, ok := appendToolResponse(nil, resp); ok {
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
