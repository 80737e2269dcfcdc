package upstream

import (
	"context"
	"fmt"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// StatusToolName is the operator-only tool reporting the upstreams' state.
const StatusToolName = "nefia.gateway.status"

// GatewayStatus is the structured result of nefia.gateway.status.
type GatewayStatus struct {
	Upstreams []Status `json:"upstreams"`
}

// statusTool describes nefia.gateway.status. Its last errors can name
// hosts and paths of the gateway's side, so it answers operators only,
// whatever the policy lets others list.
func statusTool() mcp.Tool {
	return mcp.NewTool(StatusToolName,
		mcp.WithToolTitle("Gateway upstream status"),
		mcp.WithDescription("Report each upstream MCP server behind this gateway: its state (starting, up, down, stopped), "+
			"how many tools it serves, how often it was restarted and its last error. Operators only. Changes nothing."),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[GatewayStatus](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
	)
}

func (m *Manager) handleStatus(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if a, ok := identity.FromContext(ctx); !ok || a.Role != pki.RoleOperator {
		return mcp.NewToolResultError(StatusToolName + " is for operators only"), nil
	}
	st := GatewayStatus{Upstreams: m.Status()}
	var b strings.Builder
	for _, s := range st.Upstreams {
		fmt.Fprintf(&b, "%s (%s): %s, %d tools, %d restarts", s.Name, s.Transport, s.State, s.Tools, s.Restarts)
		if s.Sessions > 0 {
			fmt.Fprintf(&b, ", %d client sessions", s.Sessions)
		}
		if s.LastError != "" {
			fmt.Fprintf(&b, ", last error: %s", s.LastError)
		}
		b.WriteString("\n")
	}
	return mcp.NewToolResultStructured(st, b.String()), nil
}

// addStatusTool registers nefia.gateway.status on srv.
func (m *Manager) addStatusTool(srv *mcpserver.MCPServer) {
	srv.AddTool(statusTool(), m.handleStatus)
}
