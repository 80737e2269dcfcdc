package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

// newTestCaller is an httpCaller, with the gateway's limitTransport, on an
// upstream served by h.
func newTestCaller(t *testing.T, h http.HandlerFunc) *httpCaller {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	ht := http.DefaultTransport.(*http.Transport).Clone()
	hc := &http.Client{Transport: &limitTransport{max: MaxMessageBytes, base: ht}}
	c := newHTTPCaller(ts.URL, hc, map[string]string{}, func() string { return "s1" }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c.version = mcp.ProtocolVersion20251125
	t.Cleanup(func() { c.cancel(); ht.CloseIdleConnections() })
	return c
}

func testCall() transport.JSONRPCRequest {
	return transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId("nefia-call-1"), Method: string(mcp.MethodToolsCall), Params: map[string]any{}}
}

// TestHTTPCallerServerRequestsEndAtTimeout: an upstream that never
// answers a call but floods its stream with requests, or never ends its
// answer to the one it sent, holds the call no longer than its timeout.
func TestHTTPCallerServerRequestsEndAtTimeout(t *testing.T) {
	t.Parallel()
	isCall := func(r *http.Request) bool {
		b, _ := io.ReadAll(r.Body)
		return strings.Contains(string(b), `"method":"tools/call"`)
	}
	tests := []struct {
		name string
		h    http.HandlerFunc
	}{
		{name: "a flood of pings", h: func(w http.ResponseWriter, r *http.Request) {
			if !isCall(r) {
				w.WriteHeader(http.StatusAccepted)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; r.Context().Err() == nil; i++ {
				if _, err := fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"ping\"}\n\n", i); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}},
		{name: "an answer's response never ends", h: func(w http.ResponseWriter, r *http.Request) {
			call := isCall(r)
			w.Header().Set("Content-Type", "text/event-stream")
			if call {
				fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n\n")
			}
			w.(http.Flusher).Flush()
			for !call && r.Context().Err() == nil {
				fmt.Fprint(w, ": x\n\n")
				w.(http.Flusher).Flush()
				time.Sleep(time.Millisecond)
			}
			<-r.Context().Done()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCaller(t, tt.h)
			const timeout = 500 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			_, err := c.send(ctx, testCall())
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want the call's deadline", err)
			}
			if d := time.Since(start); d > timeout+time.Second {
				t.Errorf("the call took %v, its timeout %v", d, timeout)
			}
		})
	}
}

// TestHTTPCallerResumesBounded: an upstream that ends every stream after
// an event id, asking for no wait, is resumed maxResumes times, not
// polled until the call's timeout.
func TestHTTPCallerResumesBounded(t *testing.T) {
	t.Parallel()
	var gets atomic.Int64
	c := newTestCaller(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			gets.Add(1)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "id: e\nretry: 0\n\n")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.send(ctx, testCall()); !errors.Is(err, errStreamEnded) {
		t.Errorf("err = %v, want %v", err, errStreamEnded)
	}
	if n := gets.Load(); n != maxResumes {
		t.Errorf("resumed %d times, want %d", n, maxResumes)
	}
}

// TestHTTPCallerAnswerOverLimitNotTheCalls: an oversized response to
// nefia's answer to a server request is not the call's answer over the
// limit. The answer's POST went out with the call's limit flag, so a call
// that then failed otherwise (here: its stream ended without the
// response, a broken session) was reported as an oversized answer, and
// the handler kept the session instead of starting a new one.
func TestHTTPCallerAnswerOverLimitNotTheCalls(t *testing.T) {
	t.Parallel()
	c := newTestCaller(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"method":"tools/call"`) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n\n")
			return // ends without the response, and without an id
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, strings.Repeat(" ", MaxMessageBytes+10))
	})
	ctx, hit := withLimitFlag(context.Background())
	_, err := c.send(ctx, testCall())
	if !errors.Is(err, errStreamEnded) {
		t.Errorf("err = %v, want %v", err, errStreamEnded)
	}
	if tooLarge(hit, err) {
		t.Errorf("the call counts as over the size limit (err %v): only the response to nefia's answer was", err)
	}
}
