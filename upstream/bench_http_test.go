package upstream_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// BenchmarkForwardedHTTPCall measures one caller's echo calls forwarded to
// an https upstream answering with JSON bodies, gateway and upstream in
// this process: allocations per call tell what the forwarded path costs
// besides the upstream's own work, which does not change between runs.
//
//	go test -run '^$' -bench ForwardedHTTPCall -benchmem -count 5 ./upstream/
func BenchmarkForwardedHTTPCall(b *testing.B) {
	srv := newTestServer("", nil)
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return srv }, &sdk.StreamableHTTPOptions{JSONResponse: true})
	ts := httptest.NewTLSServer(h)
	b.Cleanup(ts.Close)
	caFile := writeServerCA(b, ts)
	f := startGatewayUps(b, func(string) []config.Upstream {
		return []config.Upstream{{Name: "up", URL: ts.URL + "/mcp", CAFile: caFile}}
	})
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	req := mcp.CallToolRequest{}
	req.Params.Name = "up.echo"
	req.Params.Arguments = map[string]any{"text": "hello"}
	ctx := context.Background()
	for b.Loop() {
		res, err := bot.CallTool(ctx, req)
		if err != nil || res.IsError {
			b.Fatalf("up.echo: %v %+v", err, res)
		}
	}
}
