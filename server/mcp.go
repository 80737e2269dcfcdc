package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/tools"
)

// Version is reported to MCP clients in serverInfo.
const Version = "0.1.0"

// NewMCPServer builds the MCP server with nefia's tools and its authorization
// policy (tools.Allowed): tools/list shows each caller only the tools its
// role may call, and a call outside its role returns a tool error saying why.
// The caller's identity must be in each request's context (identity.WithAgent);
// a request without one has no authority. With a trail, every tool call is
// audited and state-changing tools are refused when it cannot be written;
// a nil trail turns auditing off (benchmarks and tests only).
func NewMCPServer(d tools.Deps, log *slog.Logger, trail *audit.Logger, opts ...mcpserver.ServerOption) (*mcpserver.MCPServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hooks := &mcpserver.Hooks{}
	hooks.AddAfterListTools(func(ctx context.Context, _ any, _ *mcp.ListToolsRequest, result *mcp.ListToolsResult) {
		role := callerRole(ctx)
		visible := result.Tools[:0:0]
		for _, t := range result.Tools {
			if tools.Allowed(role, t.Name) {
				visible = append(visible, t)
			}
		}
		result.Tools = visible
	})
	all := []mcpserver.ServerOption{
		mcpserver.WithToolCapabilities(false),
		mcpserver.WithHooks(hooks),
		// Outermost first: a denied call never reaches the audit guard, so
		// it leaves a tool_call record (outcome denied) but no state event.
		mcpserver.WithToolHandlerMiddleware(authorize(log)),
	}
	if trail != nil {
		a := newAuditor(trail, log)
		a.install(hooks)
		all = append(all, mcpserver.WithToolHandlerMiddleware(a.guard()))
	}
	all = append(all,
		mcpserver.WithRecovery(),
		// mcp-go logs two lines per request at info; the audit trail already
		// records every call, so its lines are only wanted when debugging.
		mcpserver.WithLogger(slog.New(debugOnly{log.Handler()})),
		mcpserver.WithInstructions("nefia manages the mutual-TLS certificates that admit agents to this gateway. "+
			"Agents may read nefia.mtls.status; operators may also init the CA, issue and revoke client certificates."),
	)
	all = append(all, opts...)
	srv := mcpserver.NewMCPServer("nefia", Version, all...)
	if err := tools.Register(srv, d); err != nil {
		return nil, err
	}
	return srv, nil
}

// authorize refuses a tool call the caller's role does not allow, as a tool
// error the model can read, before the tool runs.
func authorize(log *slog.Logger) mcpserver.ToolHandlerMiddleware {
	return func(next mcpserver.ToolHandlerFunc) mcpserver.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			agent, ok := identity.FromContext(ctx)
			if !ok || !tools.Allowed(agent.Role, req.Params.Name) {
				log.Warn("tool call denied", "tool", req.Params.Name, "name", agent.Name, "serial", agent.Serial, "role", agent.Role)
				return mcp.NewToolResultError(denial(agent, ok, req.Params.Name)), nil
			}
			return next(ctx, req)
		}
	}
}

func denial(agent identity.Agent, known bool, tool string) string {
	if !known {
		return fmt.Sprintf("permission denied: %s needs an authenticated caller", tool)
	}
	var allowed []string
	for _, name := range tools.Names() {
		if tools.Allowed(agent.Role, name) {
			allowed = append(allowed, name)
		}
	}
	return fmt.Sprintf("permission denied: role %q may not call %s (allowed: %s); ask an operator", agent.Role, tool, strings.Join(allowed, ", "))
}

func callerRole(ctx context.Context) pki.Role {
	if a, ok := identity.FromContext(ctx); ok {
		return a.Role
	}
	return ""
}

// debugOnly passes a handler's records through only at debug level.
type debugOnly struct{ slog.Handler }

func (h debugOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, slog.LevelDebug) && (l <= slog.LevelDebug || l >= slog.LevelWarn)
}

func (h debugOnly) WithAttrs(as []slog.Attr) slog.Handler { return debugOnly{h.Handler.WithAttrs(as)} }
func (h debugOnly) WithGroup(n string) slog.Handler       { return debugOnly{h.Handler.WithGroup(n)} }
