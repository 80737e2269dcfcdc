package upstream_test

import (
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

// countingListener counts the bytes its connections sent: what an
// upstream got out before the gateway stopped reading.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		// A small send buffer: what the upstream gets out is then what
		// the gateway read, plus its own receive buffer.
		_ = tc.SetWriteBuffer(64 << 10)
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// TestHTTPUpstreamResponseLimit (issue 12 item 3): an HTTP upstream whose
// answer is larger than MaxMessageBytes, as one JSON body or as one SSE
// event, gets the caller a tool error naming the limit, not the gateway's
// memory: the gateway stops reading (the upstream manages to write a
// fraction of a 32 MiB answer), and the upstream session keeps working.
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
			var written atomic.Int64
			f := startGateway(t, func(pub string) config.Upstream {
				srv := newTestServer(pub, nil)
				h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{JSONResponse: tt.json})
				ts := httptest.NewUnstartedServer(h)
				ts.Listener = countingListener{ts.Listener, &written}
				ts.Start()
				t.Cleanup(ts.Close)
				return config.Upstream{Name: "up", URL: ts.URL + "/mcp"}
			})
			bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
			for _, tool := range []string{"up.big", "up.huge"} {
				written.Store(0)
				res := servertest.CallTool(t, bot, tool, nil)
				if !res.IsError || !strings.Contains(text(res), "message size limit") {
					t.Fatalf("%s = %.200q (isError %v), want the size limit tool error", tool, text(res), res.IsError)
				}
				t.Logf("%s: the upstream sent %d bytes before the gateway stopped reading", tool, written.Load())
			}
			// Of the 32 MiB answer: the 4 MiB limit plus what the gateway's
			// receive buffer holds (Linux autotunes it up to 6 MiB).
			if n := written.Load(); n > 4*upstream.MaxMessageBytes {
				t.Errorf("the upstream sent %d bytes of a %d-byte answer: the gateway kept reading past the limit", n, 8*upstream.MaxMessageBytes)
			}
			if res := servertest.CallTool(t, bot, "up.echo", map[string]any{"text": "still"}); res.IsError {
				t.Errorf("up.echo after the oversized answer = %q", text(res))
			}
		})
	}
}
