package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
)

// BenchmarkUpstreamHandlesForwardedCall measures what a forwarded call
// costs an mcp-go upstream against the same call made directly: the
// forwarded request carries nefia's identity in _meta (agent fields and
// the ES256 assertion, ≈800 bytes against ≈120), which mcp-go decodes
// several times. BENCHMARKS.md (issue 12, round 3) explains the upstream
// phase's figures with it.
func BenchmarkUpstreamHandlesForwardedCall(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	s, err := newSigner(key)
	if err != nil {
		b.Fatal(err)
	}
	agent := identity.Agent{Name: "bench-agent", Serial: strings.Repeat("ab", 16), Role: "agent", Fingerprint: strings.Repeat("cd", 32)}
	tok, err := s.Assertion("echo", agent, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	p := &callParams{Name: "echo", Arguments: json.RawMessage(`{"text":"hello through the gateway"}`)}
	p.Meta.Agent, p.Meta.Assertion = newAgentFields(agent), tok
	forwarded, err := json.Marshal(transport.JSONRPCRequest{JSONRPC: mcp.JSONRPC_VERSION, ID: mcp.NewRequestId("nefia-call-1"), Method: string(mcp.MethodToolsCall), Params: p})
	if err != nil {
		b.Fatal(err)
	}
	direct := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello through the gateway"}}}`)
	srv := mcpserver.NewMCPServer("bench-echo", "1")
	srv.AddTool(mcp.NewTool("echo", mcp.WithString("text", mcp.Required())),
		func(_ context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			text := req.GetString("text", "")
			return mcp.NewToolResultStructured(map[string]any{"text": text}, text), nil
		})
	for _, m := range []struct {
		name string
		msg  []byte
	}{{"direct", direct}, {"forwarded", forwarded}} {
		b.Run(m.name, func(b *testing.B) {
			out, err := json.Marshal(srv.HandleMessage(context.Background(), m.msg))
			if err != nil || !strings.Contains(string(out), `"structuredContent":{"text":"hello through the gateway"}`) {
				b.Fatalf("%s call (%d bytes) answered %s, %v", m.name, len(m.msg), out, err)
			}
			for b.Loop() {
				if _, err := json.Marshal(srv.HandleMessage(context.Background(), m.msg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
