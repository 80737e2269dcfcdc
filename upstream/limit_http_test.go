package upstream_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// TestHTTPUpstreamResponseLimit (issue 12 item 4): an HTTP upstream whose
// answer is larger than MaxMessageBytes, as one JSON body or as one SSE
// event, gets the caller a tool error naming the limit, and the upstream
// session keeps working.
func TestHTTPUpstreamResponseLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		json bool
	}{
		{name: "sse", json: false},
		{name: "json", json: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, func(pub string) config.Upstream {
				srv := newTestServer(pub, nil)
				h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{JSONResponse: tt.json})
				ts := httptest.NewServer(h)
				t.Cleanup(ts.Close)
				return config.Upstream{Name: "up", URL: ts.URL + "/mcp"}
			})
			bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
			res := servertest.CallTool(t, bot, "up.big", nil)
			if !res.IsError || !strings.Contains(text(res), "message size limit") {
				t.Fatalf("up.big = %.200q (isError %v), want the size limit tool error", text(res), res.IsError)
			}
			if res := servertest.CallTool(t, bot, "up.echo", map[string]any{"text": "still"}); res.IsError {
				t.Errorf("up.echo after the oversized answer = %q", text(res))
			}
		})
	}
}

// TestHTTPUpstreamResponseLimitStopsReading: the gateway stops reading an
// oversized answer at the limit instead of buffering it: an upstream
// streaming a 256 MiB result (64 times the limit) gets only the limit, plus what the gateway's
// receive buffer holds, out before its connection is dropped.
func TestHTTPUpstreamResponseLimitStopsReading(t *testing.T) {
	t.Parallel()
	const answer = 64 * upstream.MaxMessageBytes
	var sent atomic.Int64
	done := make(chan struct{}, 1)
	f := startGateway(t, func(string) config.Upstream {
		ts := httptest.NewUnstartedServer(flood(answer, &sent, done))
		ts.Listener = smallSendBuffer{ts.Listener}
		ts.Start()
		t.Cleanup(ts.Close)
		return config.Upstream{Name: "up", URL: ts.URL + "/mcp"}
	})
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	res := servertest.CallTool(t, bot, "up.flood", nil)
	if !res.IsError || !strings.Contains(text(res), "message size limit") {
		t.Fatalf("up.flood = %.200q (isError %v), want the size limit tool error", text(res), res.IsError)
	}
	<-done // the upstream's write failed: the gateway dropped the answer
	t.Logf("the upstream got %d bytes of a %d-byte answer out", sent.Load(), answer)
	if n := sent.Load(); n > 4*upstream.MaxMessageBytes {
		t.Errorf("the upstream got %d bytes out: the gateway read past the %d-byte limit", n, upstream.MaxMessageBytes)
	}
}

// flood is a minimal Streamable HTTP MCP server (JSON responses) with one
// tool, flood, whose result is size bytes of text streamed in 64 KiB
// writes; sent counts what was written, done is told when the write fails
// or ends.
func flood(size int, sent *atomic.Int64, done chan<- struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &req) != nil || req.ID == nil {
			w.WriteHeader(http.StatusAccepted) // notifications
			return
		}
		w.Header().Set("Content-Type", "application/json")
		var result string
		switch req.Method {
		case "initialize":
			result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"flood","version":"1"}}`
		case "tools/list":
			result = `{"tools":[{"name":"flood","inputSchema":{"type":"object"}}]}`
		case "tools/call":
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"`, req.ID)
			chunk := bytes.Repeat([]byte("x"), 64<<10)
			for written := 0; written < size; written += len(chunk) {
				n, err := w.Write(chunk)
				sent.Add(int64(n))
				if err != nil {
					break
				}
			}
			_, _ = io.WriteString(w, `"}]}}`)
			select {
			case done <- struct{}{}:
			default:
			}
			return
		default:
			result = `{}`
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, req.ID, result)
	})
}

// smallSendBuffer gives accepted connections a small send buffer, so that
// what the upstream gets out is what the gateway read plus its receive
// buffer.
type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(64 << 10)
	}
	return c, err
}
