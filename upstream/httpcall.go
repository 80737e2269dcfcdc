package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// httpCaller sends nefia's own requests on an HTTP upstream's session (the
// forwarded tools/call and completion/complete: sendRequest) as one POST
// each, and reads the answer, a JSON body or an SSE stream, on the
// caller's goroutine. mcp-go's transport still starts the session
// (initialize), lists, and holds the GET stream of notifications; its
// SendRequest is not used for the calls because it starts a goroutine per
// request to watch for the transport's close, and the start and the
// wake-up of that goroutine were the largest part of what nefia added to
// a forwarded HTTP call that was not the second HTTP round trip itself
// (issue 12). Here the session's end reaches a request through
// context.AfterFunc, which starts nothing unless it fires.
//
// It speaks the protocol as mcp-go's client does for a session that
// negotiated a version before 2026-07-28 (nefia asks for 2025-11-25):
// Mcp-Session-Id and Mcp-Protocol-Version on every request, 404 as the
// end of the session, an SSE answer read to its response (notifications
// on the way handed to the session's handler, requests from the server
// answered), and a stream that ends before its response, after an event
// id, resumed with GET and Last-Event-ID (SEP-1699).
type httpCaller struct {
	url     string
	client  *http.Client // limitTransport: the size limit and lingering bodies
	static  map[string]string
	session func() string // the session id mcp-go's transport got at initialize
	log     *slog.Logger

	// version is the negotiated protocol version and notify the session's
	// notification handler; both are set by connect before the session
	// serves a call, and never change after.
	version string
	notify  func(mcp.JSONRPCNotification)

	// done ends when the session is stopped: requests in flight end with it.
	done   context.Context
	cancel context.CancelFunc
}

// errStreamEnded is a POST's SSE stream that ended without the response
// and without an event id to resume it from.
var errStreamEnded = errors.New("the upstream ended the answer's event stream before the response")

// Bounds of the answers to server requests and of resuming a stream.
const (
	// answerTimeout bounds POSTing the answer to a request the upstream
	// sent on a call's stream (mcp-go's client allows 30 s for handling
	// one; nefia's answers need no handling).
	answerTimeout = 5 * time.Second
	// resumeDelay is the wait before resuming a stream whose server named
	// none, and minResumeDelay the shortest wait taken from a server (as
	// mcp-go's client); maxResumes bounds how often one answer is resumed,
	// so that a server ending every stream at once is not polled forever
	// (the call's timeout ends it in any case).
	resumeDelay    = time.Second
	minResumeDelay = 10 * time.Millisecond
	maxResumes     = 100
	// errorBodyClip is how much of an error status's body an error quotes.
	errorBodyClip = 200
)

func newHTTPCaller(url string, client *http.Client, static map[string]string, session func() string, log *slog.Logger) *httpCaller {
	done, cancel := context.WithCancel(context.Background())
	return &httpCaller{url: url, client: client, static: static, session: session, log: log, done: done, cancel: cancel}
}

// send POSTs req and returns its response. An error is the transport's:
// sendRequest makes it a *transport.Error, on which the call's handler
// ends the session (as with mcp-go's transport), except for an answer over
// the size limit.
func (h *httpCaller) send(ctx context.Context, req transport.JSONRPCRequest) (*transport.JSONRPCResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(h.done, cancel)()

	resp, err := h.do(ctx, http.MethodPost, body, "application/json, text/event-stream", "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusAnswer(resp)
	}
	ct := resp.Header.Get("Content-Type")
	switch {
	case isMediaType(ct, "application/json"):
		// Read to the end, not decoded from the stream: a body closed at
		// its end gives its connection back at once, one closed before
		// lingers on another goroutine (linger_http.go).
		var buf bytes.Buffer
		if n := resp.ContentLength; n > 0 {
			// Sized as declared, up to what a usual answer takes: a
			// declared length is no promise to send that much.
			buf.Grow(int(min(n, 64<<10)) + bytes.MinRead)
		}
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			return nil, fmt.Errorf("read response: %w", err)
		}
		var r transport.JSONRPCResponse
		if err := json.Unmarshal(buf.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("decode response: %w", err)
		}
		if r.ID.IsNil() {
			return nil, errors.New("response without an id")
		}
		return &r, nil
	case isEventStream(ct):
		return h.readAnswer(ctx, req.ID, resp.Body)
	default:
		return nil, fmt.Errorf("unexpected content type %q", clip(ct, clipMax))
	}
}

// do sends one request of the session: body is a message (POST), or nil
// (the GET resuming a stream after lastEventID).
func (h *httpCaller) do(ctx context.Context, method string, body []byte, accept, lastEventID string) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	hr, err := http.NewRequestWithContext(ctx, method, h.url, r)
	if err != nil {
		return nil, err
	}
	hd := hr.Header
	if body != nil {
		hd["Content-Type"] = []string{"application/json"}
	}
	hd["Accept"] = []string{accept}
	if id := h.session(); id != "" {
		hd[transport.HeaderKeySessionID] = []string{id}
	}
	if h.version != "" {
		hd[transport.HeaderKeyProtocolVersion] = []string{h.version}
	}
	if lastEventID != "" {
		hd["Last-Event-Id"] = []string{lastEventID}
	}
	for k, v := range h.static { // canonical names (readHeadersFile)
		hd[k] = []string{v}
	}
	for k, v := range headersFrom(ctx) { // nefia's own, set last
		hd[k] = []string{v}
	}
	resp, err := h.client.Do(hr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		resp.Body.Close()
		return nil, transport.ErrSessionTerminated
	}
	return resp, nil
}

// statusAnswer is the answer to a POST with a status other than 200 (or
// the 404 do turned into the session's end): a JSON-RPC error response in
// its body is passed on as the response, as mcp-go's client does, so the
// caller sees the upstream's own error and the session stays; anything
// else is an error quoting the start of the body.
func statusAnswer(resp *http.Response) (*transport.JSONRPCResponse, error) {
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, errors.New("the upstream answered 401 Unauthorized: check its headers_file")
	}
	// At most the limit, whatever the body's type: limitTransport bounds an
	// event stream per event, not as a whole. One byte more, so that a
	// JSON body over the limit still fails on it (and marks the call's
	// limit flag).
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxMessageBytes+1))
	var r transport.JSONRPCResponse
	if json.Unmarshal(b, &r) == nil && r.Error != nil {
		return &r, nil
	}
	return nil, fmt.Errorf("request failed with status %d: %s", resp.StatusCode, clip(string(b), errorBodyClip))
}

// readAnswer reads a POST's SSE stream, resuming it while it ends before
// the response (after an event id), and returns the response to id.
func (h *httpCaller) readAnswer(ctx context.Context, id mcp.RequestId, body io.Reader) (*transport.JSONRPCResponse, error) {
	var cur sseCursor
	var answer *transport.JSONRPCResponse
	handle := func(data []byte) bool {
		answer = h.handleEvent(ctx, id, data)
		return answer != nil
	}
	ended, err := readSSE(body, &cur, handle)
	for resumes := 0; answer == nil; resumes++ {
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if !ended || cur.lastID == "" || resumes == maxResumes {
			return nil, errStreamEnded
		}
		ended, err = h.resume(ctx, &cur, handle)
	}
	return answer, nil
}

// resume waits the delay the server asked for, opens the stream again
// after cur's last event id, and reads it.
func (h *httpCaller) resume(ctx context.Context, cur *sseCursor, handle func([]byte) bool) (bool, error) {
	delay := resumeDelay
	if cur.hasRetry {
		delay = max(cur.retry, minResumeDelay)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	resp, err := h.do(ctx, http.MethodGet, nil, "text/event-stream", cur.lastID)
	if err != nil {
		return false, fmt.Errorf("resume the answer's event stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !isEventStream(resp.Header.Get("Content-Type")) {
		return false, fmt.Errorf("resume the answer's event stream: status %d, content type %q", resp.StatusCode, clip(resp.Header.Get("Content-Type"), clipMax))
	}
	return readSSE(resp.Body, cur, handle)
}

// handleEvent handles one message of a call's stream and returns it if it
// is the response to id. A notification goes to the session's handler
// (progress, list_changed); a request from the server is answered; a
// response to another id is not this call's and is dropped.
func (h *httpCaller) handleEvent(ctx context.Context, id mcp.RequestId, data []byte) *transport.JSONRPCResponse {
	// One decode for the answer, the stream's usual last message; a
	// notification is decoded again as one.
	var m struct {
		transport.JSONRPCResponse
		Method string `json:"method"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		h.log.Debug("undecodable message on an upstream's event stream dropped", "err", err, "bytes", len(data))
		return nil
	}
	switch {
	case m.Method != "" && m.ID.IsNil():
		var n mcp.JSONRPCNotification
		if err := json.Unmarshal(data, &n); err == nil && h.notify != nil {
			h.notify(n)
		}
	case m.Method != "":
		// Answered before reading on: one answer at a time per call, so an
		// upstream cannot make the gateway hold more.
		h.answer(ctx, m.ID, clip(m.Method, clipMax))
	case m.ID.String() == id.String():
		return &m.JSONRPCResponse
	default:
		h.log.Debug("response to another request on a call's event stream dropped", "id", clip(m.ID.String(), clipMax))
	}
	return nil
}

// answer POSTs the answer to a request the upstream sent during a call,
// as mcp-go's client would for a client with no handlers: ping answered,
// everything else (sampling, elicitation, roots) refused, since nefia
// passes none of them on to its callers. ctx is the call's: it carries
// the caller's identity headers, and the call's end ends the answer.
func (h *httpCaller) answer(ctx context.Context, id mcp.RequestId, method string) {
	var resp *transport.JSONRPCResponse
	if method == string(mcp.MethodPing) {
		resp = &transport.JSONRPCResponse{JSONRPC: mcp.JSONRPC_VERSION, ID: id, Result: json.RawMessage(`{}`)}
	} else {
		resp = transport.NewJSONRPCErrorResponse(id, mcp.METHOD_NOT_FOUND, "nefia does not pass "+method+" from an upstream on to its callers", nil)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return
	}
	// What the upstream answers this POST with is not the call's answer.
	ctx, cancel := context.WithTimeout(withoutLimitFlag(ctx), answerTimeout)
	defer cancel()
	defer context.AfterFunc(h.done, cancel)()
	r, err := h.do(ctx, http.MethodPost, body, "application/json, text/event-stream", "")
	if err != nil {
		h.log.Debug("answer to an upstream's request not sent", "method", method, "err", err)
		return
	}
	_, _ = io.CopyN(io.Discard, r.Body, MaxMessageBytes)
	r.Body.Close()
	if r.StatusCode != http.StatusOK && r.StatusCode != http.StatusAccepted {
		h.log.Debug("upstream refused the answer to its request", "method", method, "status", r.StatusCode)
	}
}

// clipMax bounds what of an upstream's method name, id or content type
// goes into a log line, an error or an answer.
const clipMax = 64

// clip is s cut to n bytes when longer, and made valid UTF-8: the upstream
// chooses it, up to the 4 MiB of a message (or net/http's bound on
// response headers).
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
