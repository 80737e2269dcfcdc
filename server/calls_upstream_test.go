package server

import (
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/observe"
)

// TestUpstreamOfOwnToolNoLookup (issue 16, second wave, item 2): the
// audit hook finds which upstream a call went to without looking nefia's
// own tools up: mcp-go's GetTool copies the tool (1 allocation of 416
// bytes per status call before, 0 after); a proxied tool is still found
// by its _meta. Not parallel: AllocsPerRun.
func TestUpstreamOfOwnToolNoLookup(t *testing.T) {
	srv := mcpserver.NewMCPServer("t", "1")
	srv.AddTool(mcp.NewTool("nefia.mtls.status", mcp.WithDescription("status")), nil)
	proxied := mcp.NewTool("up.echo")
	proxied.Meta = &mcp.Meta{AdditionalFields: map[string]any{observe.MetaUpstream: "up"}}
	srv.AddTool(proxied, nil)
	c := &callHooks{srv: func() *mcpserver.MCPServer { return srv }}
	for _, tc := range []struct{ name, tool, want string }{
		{"own tool", "nefia.mtls.status", ""},
		{"unknown own name", "nefia.nosuch", ""},
		{"proxied", "up.echo", "up"},
		{"unknown", "up.nosuch", ""},
	} {
		if got := c.upstreamOf(tc.tool); got != tc.want {
			t.Errorf("%s: upstreamOf(%q) = %q, want %q", tc.name, tc.tool, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { c.upstreamOf("nefia.mtls.status") }); n != 0 {
		t.Errorf("upstream of nefia's own tool: %v allocations, want 0", n)
	}
}
