package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"
)

// TestHTTPSessionCallsTool: the Streamable HTTP load client initializes a
// session with a real MCP server (mcp-go, over TLS) and reads tool
// answers sent as a JSON body and as an SSE event after a notification;
// tool and protocol errors are errors.
func TestHTTPSessionCallsTool(t *testing.T) {
	t.Parallel()
	srv := mcpserver.NewMCPServer("t", "1")
	srv.AddTool(mcp.NewTool("echo", mcp.WithString("text")), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		text := req.GetString("text", "")
		if text == "notify" {
			// A notification first makes the server answer as an SSE stream.
			_ = srv.SendNotificationToClient(ctx, "notifications/message", map[string]any{"level": "info", "data": "x"})
		}
		return mcp.NewToolResultStructured(map[string]any{"text": text}, text), nil
	})
	srv.AddTool(mcp.NewTool("fail"), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultError("no"), nil
	})
	ts := httptest.NewUnstartedServer(mcpserver.NewStreamableHTTPServer(srv))
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	cfg := ts.Client().Transport.(*http.Transport).TLSClientConfig

	s, err := OpenHTTPSession(t.Context(), ts.URL+"/mcp", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct{ name, tool, args, want string }{
		{name: "JSON body", tool: "echo", args: `{"text":"plain"}`, want: `"text":"plain"`},
		{name: "SSE event", tool: "echo", args: `{"text":"notify"}`, want: `"text":"notify"`},
		{name: "tool error", tool: "fail", want: "tool error"},
		{name: "unknown tool", tool: "nope", want: "error"},
	} {
		line, err := s.CallTool(tc.tool, []byte(tc.args))
		got := string(line)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: CallTool = %q, %v; want %q", tc.name, line, err, tc.want)
		}
		if (err == nil) != strings.HasPrefix(tc.want, `"`) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if err == nil {
			if _, cerr := Check(line); cerr != nil {
				t.Errorf("%s: %v", tc.name, cerr)
			}
		}
	}
}
