package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/policy"
)

// Authorizer enforces a policy.Policy on an MCP server: it decides every
// tool call once, before the tool runs, records the decision in the
// request's context for the audit trail, and filters tools/list with the
// same policy. It holds the policy behind an atomic pointer so that a
// configuration reload can swap it (SetPolicy) while calls are in flight;
// each call is decided by the policy in force when it arrives.
//
// One Authorizer may serve several MCP servers (SetPolicy then changes them
// all).
type Authorizer struct {
	p atomic.Pointer[policy.Policy]
}

// NewAuthorizer returns an Authorizer enforcing p; nil means
// policy.Default(), nefia's built-in behaviour.
func NewAuthorizer(p *policy.Policy) *Authorizer {
	a := &Authorizer{}
	a.SetPolicy(p)
	return a
}

// Policy returns the policy in force.
func (a *Authorizer) Policy() *policy.Policy { return a.p.Load() }

// SetPolicy replaces the policy in force; nil restores the default. Calls
// already authorized keep their decision.
func (a *Authorizer) SetPolicy(p *policy.Policy) {
	if p == nil {
		p = policy.Default()
	}
	a.p.Store(p)
}

// install wires the authorizer into a server's options: the tools/list
// filter as a hook, and the call check as a tool middleware, which the
// caller must put outermost so a denied call never reaches the tool (and so
// never records a state event). names lists the server's tools, for denials.
func (a *Authorizer) install(hooks *mcpserver.Hooks, log *slog.Logger, names func() []string) mcpserver.ServerOption {
	hooks.AddAfterListTools(func(ctx context.Context, _ any, _ *mcp.ListToolsRequest, result *mcp.ListToolsResult) {
		agent, _ := identity.FromContext(ctx)
		p := a.Policy()
		visible := result.Tools[:0:0]
		for _, t := range result.Tools {
			if p.Decide(agent, t.Name).Allowed {
				visible = append(visible, t)
			}
		}
		result.Tools = visible
	})
	return mcpserver.WithToolHandlerMiddleware(a.authorize(log, names))
}

// authorize decides a call and refuses it, as a tool error the model can
// read, when the policy denies it. The decision goes into the context
// (policy.WithDecision): the request's slot, if the transport gave it one,
// is how the audit hooks, which see the context the request arrived with,
// learn what was enforced without deciding again.
func (a *Authorizer) authorize(log *slog.Logger, names func() []string) mcpserver.ToolHandlerMiddleware {
	return func(next mcpserver.ToolHandlerFunc) mcpserver.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			agent, known := identity.FromContext(ctx)
			p := a.Policy()
			d := p.Decide(agent, req.Params.Name)
			ctx = policy.WithDecision(ctx, d)
			if !d.Allowed {
				log.Warn("tool call denied", "tool", req.Params.Name, "name", agent.Name, "serial", agent.Serial,
					"role", agent.Role, "reason", d.Reason)
				return mcp.NewToolResultError(denial(p.Allowed(agent, names()), agent, known, d)), nil
			}
			return next(ctx, req)
		}
	}
}

// denial is the text a denied caller reads: why, and which tools it may
// call instead, so a model can recover without guessing.
func denial(allowed []string, agent identity.Agent, known bool, d policy.Decision) string {
	if !known {
		return fmt.Sprintf("permission denied: %s needs an authenticated caller", d.Tool)
	}
	list := "none"
	if len(allowed) > 0 {
		list = strings.Join(allowed, ", ")
	}
	return fmt.Sprintf("permission denied: %q (role %q) may not call %s: %s (allowed: %s); ask an operator",
		agent.Name, agent.Role, d.Tool, d.Reason, list)
}

// toolNames lists the tools of the server srv returns, sorted.
func toolNames(srv func() *mcpserver.MCPServer) func() []string {
	return func() []string {
		var names []string
		for name := range srv().ListTools() {
			names = append(names, name)
		}
		slices.Sort(names)
		return names
	}
}

// SetPolicy replaces the authorization policy of a running gateway (nil:
// the default), for a configuration reload: calls that arrive afterwards,
// and tools/list, use the new one.
func (g *Gateway) SetPolicy(p *policy.Policy) { g.authz.SetPolicy(p) }

// Policy returns the authorization policy in force.
func (g *Gateway) Policy() *policy.Policy { return g.authz.Policy() }
