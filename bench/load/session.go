package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Session is one initialized MCP session over a raw mutual-TLS connection,
// used by one goroutine at a time with at most one request outstanding.
type Session struct {
	Conn *tls.Conn
	br   *bufio.Reader
	next int64
	req  []byte
}

const initializeLine = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"nefia-bench","version":"1"}}}` + "\n" +
	`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n"

// OpenSession dials addr and performs the MCP initialize handshake.
func OpenSession(ctx context.Context, addr string, cfg *tls.Config) (*Session, error) {
	conn, err := Dial(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	s := &Session{Conn: conn, br: bufio.NewReaderSize(conn, 64<<10), next: 1}
	_ = conn.SetDeadline(time.Now().Add(OpTimeout))
	if _, err := conn.Write([]byte(initializeLine)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("load: initialize: %w", err)
	}
	if _, err := s.readResponse(0); err != nil {
		conn.Close()
		return nil, fmt.Errorf("load: initialize: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	return s, nil
}

// Close closes the connection.
func (s *Session) Close() error { return s.Conn.Close() }

// CallTool calls a tool with arguments given as a JSON object (nil: none)
// and returns the response line, which stays valid until the next call.
// A protocol error or a tool result with isError set is an error.
func (s *Session) CallTool(name string, args []byte) ([]byte, error) {
	id := s.next
	s.next++
	s.req = append(appendCall(s.req[:0], id, name, args), '\n')
	_ = s.Conn.SetDeadline(time.Now().Add(OpTimeout))
	if _, err := s.Conn.Write(s.req); err != nil {
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	line, err := s.readResponse(id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if bytes.Contains(line, []byte(`"isError":true`)) {
		return nil, fmt.Errorf("%s: tool error: %s", name, trim(line))
	}
	return line, nil
}

// appendCall appends a tools/call request for name with args (a JSON
// object; empty: none).
func appendCall(dst []byte, id int64, name string, args []byte) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = strconv.AppendInt(dst, id, 10)
	dst = append(dst, `,"method":"tools/call","params":{"name":`...)
	dst = strconv.AppendQuote(dst, name)
	dst = append(dst, `,"arguments":`...)
	if len(args) == 0 {
		args = []byte("{}")
	}
	dst = append(dst, args...)
	return append(dst, "}}"...)
}

// readResponse reads lines until the response to id, skipping
// notifications, and fails on a JSON-RPC error. It relies on mcp-go writing
// "jsonrpc" then "id" first, which its response struct's field order fixes;
// Check decodes a response properly.
func (s *Session) readResponse(id int64) ([]byte, error) {
	var want []byte
	want = append(want, `{"jsonrpc":"2.0","id":`...)
	want = strconv.AppendInt(want, id, 10)
	for {
		line, err := s.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("response longer than %d bytes", s.br.Size())
		}
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if !bytes.HasPrefix(line, want) || len(line) <= len(want) {
			continue // a notification, or another id
		}
		rest := line[len(want):]
		if rest[0] != ',' {
			continue // id 1 vs id 12
		}
		if bytes.HasPrefix(rest, []byte(`,"error"`)) {
			return nil, fmt.Errorf("JSON-RPC error: %s", trim(line))
		}
		return line, nil
	}
}

// Check decodes a tools/call response line fully and returns its
// structured content, failing unless it is a successful tool result.
func Check(line []byte) (map[string]any, error) {
	var resp struct {
		JSONRPC string           `json:"jsonrpc"`
		ID      json.RawMessage  `json:"id"`
		Error   *json.RawMessage `json:"error"`
		Result  struct {
			IsError           bool           `json:"isError"`
			StructuredContent map[string]any `json:"structuredContent"`
		} `json:"result"`
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("load: response is not JSON: %w", err)
	}
	switch {
	case resp.JSONRPC != "2.0" || len(resp.ID) == 0:
		return nil, fmt.Errorf("load: not a JSON-RPC response: %s", trim(line))
	case resp.Error != nil:
		return nil, fmt.Errorf("load: JSON-RPC error: %s", *resp.Error)
	case resp.Result.IsError:
		return nil, fmt.Errorf("load: tool error: %s", trim(line))
	case resp.Result.StructuredContent == nil:
		return nil, fmt.Errorf("load: no structured content: %s", trim(line))
	}
	return resp.Result.StructuredContent, nil
}

// WaitClosed blocks reading the session until the server closes it (or
// d passes) and returns when that was seen.
func (s *Session) WaitClosed(d time.Duration) (time.Time, error) {
	_ = s.Conn.SetReadDeadline(time.Now().Add(d))
	for {
		if _, err := s.br.ReadSlice('\n'); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			at := time.Now()
			if !IsClosed(err) {
				return at, fmt.Errorf("load: session still open after %v", d)
			}
			return at, nil
		}
	}
}

// ToolWorkers returns a NewWorker that opens one session per worker (with
// cfgFor(i)) and calls tool in a loop, with args(i, n) for its n-th call.
func ToolWorkers(ctx context.Context, addr string, cfgFor func(i int) *tls.Config, tool string, args func(i int, n int64) []byte) NewWorker {
	return toolWorkers(func(i int) (Caller, error) { return OpenSession(ctx, addr, cfgFor(i)) }, tool, args)
}

// Caller is a session tools are called on: raw stream or HTTP.
type Caller interface {
	CallTool(name string, args []byte) ([]byte, error)
	Close() error
}

// toolWorkers returns a NewWorker that opens one session per worker and
// calls tool in a loop, with args(i, n) for its n-th call.
func toolWorkers(open func(i int) (Caller, error), tool string, args func(i int, n int64) []byte) NewWorker {
	return func(i int) (Op, func(), error) {
		s, err := open(i)
		if err != nil {
			return nil, nil, err
		}
		var n int64
		return func() (bool, error) {
			n++
			var a []byte
			if args != nil {
				a = args(i, n)
			}
			_, err := s.CallTool(tool, a)
			return false, err
		}, func() { s.Close() }, nil
	}
}
