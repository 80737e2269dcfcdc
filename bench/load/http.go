package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// HTTPSession is one initialized MCP session over Streamable HTTP, on its
// own mutual-TLS connection (HTTP/2 when the server offers it), used by
// one goroutine at a time with at most one request outstanding.
type HTTPSession struct {
	ctx     context.Context
	url     string
	client  *http.Client
	session string // Mcp-Session-Id, "" if the server gave none
	next    int64
	req     []byte
	resp    []byte
}

const (
	httpInitialize  = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"nefia-bench","version":"1"}}}`
	httpInitialized = `{"jsonrpc":"2.0","method":"notifications/initialized"}`
)

// OpenHTTPSession connects to url (https://ADDR/mcp) with cfg and performs
// the MCP initialize handshake.
func OpenHTTPSession(ctx context.Context, url string, cfg *tls.Config) (*HTTPSession, error) {
	c := cfg.Clone()
	c.NextProtos = []string{"h2", "http/1.1"}
	tr := &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1}
	s := &HTTPSession{ctx: ctx, url: url, client: &http.Client{Transport: tr, Timeout: OpTimeout}, next: 1}
	resp, err := s.post([]byte(httpInitialize))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("load: initialize: %w", err)
	}
	s.session = resp.Header.Get("Mcp-Session-Id")
	if _, err := s.read(resp, 0); err != nil {
		s.Close()
		return nil, fmt.Errorf("load: initialize: %w", err)
	}
	resp, err = s.post([]byte(httpInitialized))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("load: initialized: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		s.Close()
		return nil, fmt.Errorf("load: initialized: HTTP %s", resp.Status)
	}
	return s, nil
}

// Close ends the session (DELETE, best effort) and its connection.
func (s *HTTPSession) Close() error {
	if s.session != "" {
		if req, err := http.NewRequestWithContext(s.ctx, http.MethodDelete, s.url, nil); err == nil {
			req.Header.Set("Mcp-Session-Id", s.session)
			if resp, err := s.client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	s.client.CloseIdleConnections()
	return nil
}

func (s *HTTPSession) post(body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if s.session != "" {
		req.Header.Set("Mcp-Session-Id", s.session)
	}
	return s.client.Do(req)
}

// CallTool calls a tool with arguments given as a JSON object (nil: none)
// and returns the JSON-RPC response, which stays valid until the next
// call. A protocol error or a tool result with isError set is an error.
func (s *HTTPSession) CallTool(name string, args []byte) ([]byte, error) {
	id := s.next
	s.next++
	s.req = appendCall(s.req[:0], id, name, args)
	resp, err := s.post(s.req)
	if err != nil {
		return nil, err
	}
	line, err := s.read(resp, id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// As Session.CallTool: the answer's envelope, not a full decode (Check
	// does that).
	switch {
	case bytes.Contains(line, []byte(`"error":{`)) && !bytes.Contains(line, []byte(`"result":`)):
		return nil, fmt.Errorf("%s: JSON-RPC error: %s", name, trim(line))
	case bytes.Contains(line, []byte(`"isError":true`)):
		return nil, fmt.Errorf("%s: tool error: %s", name, trim(line))
	}
	return line, nil
}

// read returns the response to id from resp's body: the body itself
// (application/json) or the data of the SSE event that carries it.
func (s *HTTPSession) read(resp *http.Response, id int64) ([]byte, error) {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("HTTP %s: %s", resp.Status, trim(b))
	}
	want := []byte(`"id":` + strconv.FormatInt(id, 10))
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b := bytes.NewBuffer(s.resp[:0])
		if _, err := b.ReadFrom(resp.Body); err != nil {
			return nil, err
		}
		s.resp = b.Bytes()
		return s.resp, nil
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadSlice('\n')
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok && bytes.Contains(data, want) {
			s.resp = append(s.resp[:0], bytes.TrimSpace(data)...)
			return s.resp, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("event stream ended without the response to id %d", id)
			}
			return nil, err
		}
	}
}

// HTTPToolWorkers is ToolWorkers over Streamable HTTP: one session (and
// connection) per worker at url, calling tool in a loop.
func HTTPToolWorkers(ctx context.Context, url string, cfgFor func(i int) *tls.Config, tool string, args func(i int, n int64) []byte) NewWorker {
	return toolWorkers(func(i int) (Caller, error) { return OpenHTTPSession(ctx, url, cfgFor(i)) }, tool, args)
}
