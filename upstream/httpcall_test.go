package upstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// scripted is a minimal Streamable HTTP MCP server with one tool, "do",
// whose answer is the test's: call gets the tools/call request's id and
// the response writer. It hands out session ids, refuses a request
// without the current one, and keeps what the tests look at.
type scripted struct {
	call func(w http.ResponseWriter, id string)
	// get answers a GET carrying Last-Event-ID (a resumed stream); the
	// notification stream's GET (without one) is refused with 405.
	get func(w http.ResponseWriter, r *http.Request)

	mu       sync.Mutex
	inits    int
	answers  []map[string]any // what the client POSTed back as responses
	answered chan struct{}    // told of each
}

func newScripted() *scripted { return &scripted{answered: make(chan struct{}, 8)} }

func (s *scripted) session() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("sess-%d", s.inits)
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		if r.Header.Get("Last-Event-Id") != "" && s.get != nil {
			s.get(w, r)
			return
		}
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	body, _ := io.ReadAll(r.Body)
	if json.Unmarshal(body, &msg) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if msg.Method == "initialize" {
		s.mu.Lock()
		s.inits++
		s.mu.Unlock()
		w.Header().Set("Mcp-Session-Id", s.session())
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"scripted","version":"1"}}}`, msg.ID)
		return
	}
	if r.Header.Get("Mcp-Session-Id") != s.session() {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	if r.Header.Get("Mcp-Protocol-Version") != "2025-11-25" {
		http.Error(w, "no protocol version", http.StatusBadRequest)
		return
	}
	switch {
	case msg.Method == "" && msg.ID != nil: // a response to our request
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		s.mu.Lock()
		s.answers = append(s.answers, m)
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		s.answered <- struct{}{}
	case msg.ID == nil: // a notification
		w.WriteHeader(http.StatusAccepted)
	case msg.Method == "tools/list":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"do","inputSchema":{"type":"object"}}]}}`, msg.ID)
	case msg.Method == "tools/call":
		s.call(w, string(msg.ID))
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"no"}}`, msg.ID)
	}
}

// waitAnswer waits for the client to POST an answer to the server's
// request, at most 10s: without an answer the test fails on what the
// upstream was answered instead of hanging (ts.Close waits for handlers).
func (s *scripted) waitAnswer() {
	select {
	case <-s.answered:
	case <-time.After(10 * time.Second):
	}
}

func (s *scripted) initCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inits
}

// sse starts an event stream answer.
func sse(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
}

// result is the response to id with one text item.
func result(id, text string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":%q}]}}`, id, text)
}

// TestHTTPUpstreamCallStreams: a forwarded call's answer as an event
// stream, in the shapes the SSE syntax and the protocol allow, reaches the
// caller; what the stream carries besides the response is handled or
// dropped, never taken for the answer.
func TestHTTPUpstreamCallStreams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		call func(s *scripted, w http.ResponseWriter, id string)
		// answer is the response the upstream must have been POSTed, if any.
		answer string
	}{
		{name: "CRLF lines, comments, an event id, data over two lines", call: func(_ *scripted, w http.ResponseWriter, id string) {
			sse(w)
			r := result(id, "crlf")
			fmt.Fprintf(w, ": keep-alive\r\nid: 7\r\nevent: message\r\ndata: %s\r\ndata: \r\n\r\n", r[:10]+"\r\ndata: "+r[10:])
		}},
		{name: "other events and a response to another id first", call: func(_ *scripted, w http.ResponseWriter, id string) {
			sse(w)
			fmt.Fprintf(w, "event: other\ndata: %s\n\n", result(id, "not this one"))
			fmt.Fprintf(w, "data: %s\n\n", result(`"someone-else"`, "nor this"))
			fmt.Fprintf(w, "data: not json\n\n")
			fmt.Fprintf(w, "data: %s\n\n", result(id, "crlf"))
		}},
		{name: "the response as the last line without a blank line", call: func(_ *scripted, w http.ResponseWriter, id string) {
			sse(w)
			fmt.Fprintf(w, "data: %s", result(id, "crlf"))
		}},
		{name: "a ping from the server during the call is answered", answer: `{}`, call: func(s *scripted, w http.ResponseWriter, id string) {
			sse(w)
			fmt.Fprint(w, `data: {"jsonrpc":"2.0","id":"srv-1","method":"ping"}`+"\n\n")
			w.(http.Flusher).Flush()
			s.waitAnswer()
			fmt.Fprintf(w, "data: %s\n\n", result(id, "crlf"))
		}},
		{name: "a sampling request during the call is refused", answer: `-32601`, call: func(s *scripted, w http.ResponseWriter, id string) {
			sse(w)
			fmt.Fprint(w, `data: {"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":{}}`+"\n\n")
			w.(http.Flusher).Flush()
			s.waitAnswer()
			fmt.Fprintf(w, "data: %s\n\n", result(id, "crlf"))
		}},
		{name: "a request with a 64 KiB method name is refused, the name clipped", answer: `-32601`, call: func(s *scripted, w http.ResponseWriter, id string) {
			sse(w)
			fmt.Fprintf(w, `data: {"jsonrpc":"2.0","id":"srv-1","method":"%s"}`+"\n\n", strings.Repeat("m", 64<<10))
			w.(http.Flusher).Flush()
			s.waitAnswer()
			fmt.Fprintf(w, "data: %s\n\n", result(id, "crlf"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newScripted()
			s.call = func(w http.ResponseWriter, id string) { tt.call(s, w, id) }
			ts := httptest.NewServer(s)
			t.Cleanup(ts.Close)
			f := startGateway(t, func(string) config.Upstream { return config.Upstream{Name: "up", URL: ts.URL + "/mcp"} })
			bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
			res := servertest.CallTool(t, bot, "up.do", nil)
			if res.IsError || text(res) != "crlf" {
				t.Fatalf("up.do = %q (isError %v), want crlf", text(res), res.IsError)
			}
			if tt.answer != "" {
				s.mu.Lock()
				got, _ := json.Marshal(s.answers)
				s.mu.Unlock()
				if !strings.Contains(string(got), `"id":"srv-1"`) || !strings.Contains(string(got), tt.answer) {
					t.Errorf("the upstream was answered %s, want the id srv-1 and %s", got, tt.answer)
				}
				if len(got) > 1024 {
					t.Errorf("the upstream was answered %d bytes, want its request's method clipped", len(got))
				}
			}
			if n := s.initCount(); n != 1 {
				t.Errorf("the upstream was initialized %d times, want 1: the session broke", n)
			}
		})
	}
}

// TestHTTPUpstreamCallResumed (SEP-1699): a call's stream that the
// upstream ends before the response, after an event id and a retry time,
// is resumed with GET and Last-Event-ID, and the response on the resumed
// stream is the answer; a stream that ends with no id to resume from is a
// broken call, told to the caller, and the session starts again.
func TestHTTPUpstreamCallResumed(t *testing.T) {
	t.Parallel()
	s := newScripted()
	ids := make(chan string, 1)
	s.call = func(w http.ResponseWriter, id string) {
		sse(w)
		fmt.Fprint(w, "id: ev-1\nretry: 10\ndata:\n\n")
		ids <- id
	}
	var lastEventID string
	s.get = func(w http.ResponseWriter, r *http.Request) {
		lastEventID = r.Header.Get("Last-Event-Id")
		sse(w)
		fmt.Fprintf(w, "id: ev-2\ndata: %s\n\n", result(<-ids, "resumed"))
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	f := startGateway(t, func(string) config.Upstream { return config.Upstream{Name: "up", URL: ts.URL + "/mcp"} })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	if res := servertest.CallTool(t, bot, "up.do", nil); res.IsError || text(res) != "resumed" {
		t.Fatalf("up.do = %q (isError %v), want the resumed stream's answer", text(res), res.IsError)
	}
	if lastEventID != "ev-1" {
		t.Errorf("resumed with Last-Event-ID %q, want ev-1", lastEventID)
	}

	s.call = func(w http.ResponseWriter, id string) {
		sse(w)
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n")
	}
	res := servertest.CallTool(t, bot, "up.do", nil)
	if !res.IsError || !strings.Contains(text(res), "before the response") {
		t.Errorf("up.do on a stream ended early = %q (isError %v), want a tool error saying so", text(res), res.IsError)
	}
}

// TestHTTPUpstreamCallStatus: an answer with an error status. A JSON-RPC
// error in its body is the upstream's own error, passed on, and the
// session stays; any other body is a failed call that quotes the start of
// it; 404 ends the session, and the gateway starts a new one.
func TestHTTPUpstreamCallStatus(t *testing.T) {
	t.Parallel()
	s := newScripted()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	f := startGateway(t, func(string) config.Upstream { return config.Upstream{Name: "up", URL: ts.URL + "/mcp"} })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	call := func() (*mcp.CallToolResult, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = "up.do"
		return bot.CallTool(ctx, req)
	}

	s.call = func(w http.ResponseWriter, id string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32602,"message":"bad arguments, says the upstream"}}`, id)
	}
	if _, err := call(); err == nil || !strings.Contains(err.Error(), "bad arguments, says the upstream") {
		t.Errorf("up.do answered 400 with a JSON-RPC error: err = %v, want the upstream's error", err)
	}

	s.call = func(w http.ResponseWriter, id string) {
		http.Error(w, "overloaded"+strings.Repeat(".", 1000), http.StatusServiceUnavailable)
	}
	res, err := call()
	if err != nil || !res.IsError || !strings.Contains(text(res), "status 503: overloaded") || len(text(res)) > 600 {
		t.Errorf("up.do answered 503 = %q (err %v), want a tool error quoting the start of the body", text(res), err)
	}
	if n := s.initCount(); n != 1 {
		t.Fatalf("initialized %d times before the 404, want 1", n)
	}

	s.mu.Lock()
	s.inits += 100 // the gateway's session id is unknown from now on: 404
	s.mu.Unlock()
	s.call = func(w http.ResponseWriter, id string) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, result(id, "again"))
	}
	if res, err := call(); err != nil || !res.IsError {
		t.Fatalf("up.do on an ended session = %q (err %v), want a tool error", text(res), err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := call()
		if err == nil && !res.IsError && text(res) == "again" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new session after the 404: %q (err %v)", text(res), err)
		}
		time.Sleep(20 * time.Millisecond) // polling the restart (backoff)
	}
}

// TestHTTPUpstreamCallEndsWithSession: a call in flight on an HTTP
// upstream's session ends as soon as the session does (here: another
// call's 404 ended it), not at its call_timeout: cn.stop reaches the
// request through the httpCaller's done context.
func TestHTTPUpstreamCallEndsWithSession(t *testing.T) {
	t.Parallel()
	s := newScripted()
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	s.call = func(w http.ResponseWriter, _ string) {
		sse(w)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-release
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(release) }) // before ts.Close, which waits for the handler
	f := startGateway(t, func(string) config.Upstream {
		return config.Upstream{Name: "up", URL: ts.URL + "/mcp", CallTimeout: time.Minute}
	})
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	type answer struct {
		res *mcp.CallToolResult
		err error
	}
	hung := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = "up.do"
		res, err := bot.CallTool(ctx, req)
		hung <- answer{res, err}
	}()
	select {
	case <-started:
	case a := <-hung:
		t.Fatalf("up.do = %v (err %v) before the upstream got it", a.res, a.err)
	}

	s.mu.Lock()
	s.inits += 100 // the next request is answered 404: the session ends
	s.mu.Unlock()
	other := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	if res := servertest.CallTool(t, other, "up.do", nil); !res.IsError {
		t.Fatalf("up.do on an ended session = %q, want a tool error", text(res))
	}
	select {
	case a := <-hung:
		if a.err == nil && !a.res.IsError {
			t.Errorf("the call in flight when its session ended = %q, want an error", text(a.res))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight did not end within 10s of its session's end (call_timeout 1m)")
	}
}
