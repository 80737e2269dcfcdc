package server

import (
	"context"
	"log/slog"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/tools"
)

// Version is reported to MCP clients in serverInfo.
const Version = "0.1.0"

// NewMCPServer builds the MCP server with nefia's tools and the built-in
// authorization policy (policy.Default); see NewMCPServerWithPolicy.
func NewMCPServer(d tools.Deps, log *slog.Logger, trail *audit.Logger, opts ...mcpserver.ServerOption) (*mcpserver.MCPServer, error) {
	return NewMCPServerWithPolicy(d, nil, log, trail, nil, opts...)
}

// NewMCPServerWithPolicy builds the MCP server with nefia's tools and the
// policy authz holds (nil: a fixed policy.Default): tools/list shows each
// caller only the tools the policy allows it, and a call it denies returns a
// tool error saying why and what the caller may call instead. The caller's
// identity must be in each request's context (identity.WithAgent); a
// request without one has no authority. Transports give each message its
// own decision slot (policy.WithSlot) so the audit trail records the
// decision that was enforced. With a trail, every tool call is audited and
// state-changing tools are refused when it cannot be written; a nil trail
// turns auditing off (benchmarks and tests only).
//
// Every tool call is reported to obs as an observe.CallEvent; a nil obs with
// a trail reports them to the trail alone (tool_call records). The gateway
// passes its own observer, which includes the trail.
func NewMCPServerWithPolicy(d tools.Deps, authz *Authorizer, log *slog.Logger, trail *audit.Logger, obs observe.Observer, opts ...mcpserver.ServerOption) (*mcpserver.MCPServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if authz == nil {
		authz = NewAuthorizer(nil)
	}
	var srv *mcpserver.MCPServer // set below, before any request can arrive
	hooks := &mcpserver.Hooks{}
	all := []mcpserver.ServerOption{
		// listChanged: upstream MCP servers add and remove tools while
		// clients are connected (package upstream, issue 12).
		mcpserver.WithToolCapabilities(true),
		mcpserver.WithHooks(hooks),
		// Outermost first: a denied call never reaches the tool, so it
		// leaves a tool_call record (outcome denied) but no state event.
		authz.install(hooks, log, toolNames(func() *mcpserver.MCPServer { return srv })),
	}
	// Upstreams' resources and prompts, under the same policy.
	all = append(all, authz.installItems(hooks, log)...)
	if obs == nil && trail != nil {
		obs = newAuditor(trail, log)
	}
	if obs != nil {
		ch := &callHooks{obs: obs, log: log, srv: func() *mcpserver.MCPServer { return srv }}
		ch.install(hooks)
		ch.installItems(hooks)
	}
	if trail != nil {
		// The state-changing tools record their own event on it (package
		// ops), before they act: no audit, no action.
		d.Audit = trail
	}
	all = append(all,
		mcpserver.WithRecovery(),
		// mcp-go logs two lines per request at info; the audit trail already
		// records every call, so its lines are only wanted when debugging.
		mcpserver.WithLogger(slog.New(debugOnly{log.Handler()})),
		mcpserver.WithInstructions("nefia manages the mutual-TLS certificates that admit agents to this gateway. "+
			"tools/list shows the tools this gateway's policy lets you call."),
	)
	all = append(all, opts...)
	srv = mcpserver.NewMCPServer("nefia", Version, all...)
	if err := tools.Register(srv, d); err != nil {
		return nil, err
	}
	return srv, nil
}

// debugOnly passes a handler's records through only at debug level.
type debugOnly struct{ slog.Handler }

func (h debugOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, slog.LevelDebug) && (l <= slog.LevelDebug || l >= slog.LevelWarn)
}

func (h debugOnly) WithAttrs(as []slog.Attr) slog.Handler { return debugOnly{h.Handler.WithAttrs(as)} }
func (h debugOnly) WithGroup(n string) slog.Handler       { return debugOnly{h.Handler.WithGroup(n)} }
