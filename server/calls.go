package server

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/policy"
)

// callHooks turns mcp-go's hooks into one observe.CallEvent per tool call.
// Hooks rather than middleware, so that calls which never reach a handler
// (unknown tools, bad arguments) are reported too: AfterCallTool sees every
// call that produced a result (denials and tool errors included), OnError
// every call that failed as a protocol error, and mcp-go fires exactly one
// of the two per call.
type callHooks struct {
	obs observe.Observer
	log *slog.Logger
	// srv returns the server the hooks are installed on, to find which
	// upstream a proxied tool belongs to (observe.MetaUpstream).
	srv func() *mcpserver.MCPServer
	// starts maps a call's request (mcp-go passes the same
	// *CallToolRequest to BeforeCallTool and to AfterCallTool or OnError) to
	// when it began, for requests whose context has no slot of their own
	// (policy.MarkStart: the transports give each message one). Session
	// ids would not do: stateless 2026-07-28 HTTP requests have none, and
	// JSON-RPC ids repeat across clients.
	starts sync.Map
}

func (c *callHooks) install(h *mcpserver.Hooks) {
	h.AddBeforeCallTool(func(ctx context.Context, _ any, req *mcp.CallToolRequest) {
		c.begin(ctx, req)
	})
	h.AddAfterCallTool(func(ctx context.Context, _ any, req *mcp.CallToolRequest, result any) {
		outcome, errText := audit.OutcomeOK, ""
		if res, ok := result.(*mcp.CallToolResult); ok && res.IsError {
			outcome, errText = audit.OutcomeError, resultText(res)
		}
		c.report(ctx, req, outcome, errText)
	})
	h.AddOnError(func(ctx context.Context, _ any, method mcp.MCPMethod, message any, err error) {
		if method != mcp.MethodToolsCall {
			return
		}
		req, _ := message.(*mcp.CallToolRequest)
		if req == nil {
			req = &mcp.CallToolRequest{}
		}
		c.report(ctx, req, audit.OutcomeError, err.Error())
	})
}

// report builds the call's event. Its decision is the one authorize
// enforced, read back from the request's slot, not a new one: the policy
// may have been swapped since.
func (c *callHooks) report(ctx context.Context, req *mcp.CallToolRequest, outcome, errText string) {
	e := observe.CallEvent{Tool: req.Params.Name, Args: req.GetArguments(), Outcome: outcome, Error: errText}
	e.Agent, e.Known = identity.FromContext(ctx)
	if e.Agent.SessionID == "" {
		if s := mcpserver.ClientSessionFromContext(ctx); s != nil {
			e.Agent.SessionID = s.SessionID()
		}
	}
	if d, ok := enforcedDecision(ctx, c.log, e.Tool); ok {
		e.Decision = d.String()
		if !d.Allowed {
			e.Outcome = audit.OutcomeDenied
		}
	}
	e.Upstream = c.upstreamOf(e.Tool)
	now := time.Now()
	e.Duration = c.lasted(ctx, req, now)
	c.counted(ctx, e.Known, now)
	c.obs.Call(e)
}

// ownToolPrefix begins the names of nefia's own tools, which are never
// proxied: a proxied tool is named <upstream>.<tool>, and no upstream may
// be named nefia (config.ReservedUpstreamName, refused by validation) nor
// contain a dot. Their calls (every status poll) skip the lookup: mcp-go's
// GetTool copies the whole tool, 416 bytes, under the tool table's lock
// (issue 16, second wave: about 0.65 µs per call).
const ownToolPrefix = config.ReservedUpstreamName + "."

// upstreamOf returns the upstream a tool is proxied to, from the
// observe.MetaUpstream key of its _meta; "" for nefia's own tools and for
// names the server does not have.
func (c *callHooks) upstreamOf(tool string) string {
	if c.srv == nil || strings.HasPrefix(tool, ownToolPrefix) {
		return ""
	}
	srv := c.srv()
	if srv == nil {
		return ""
	}
	st := srv.GetTool(tool)
	if st == nil || st.Tool.Meta == nil {
		return ""
	}
	name, _ := st.Tool.Meta.AdditionalFields[observe.MetaUpstream].(string)
	return name
}

// counted counts the call against the gateway connection it came on, for
// the session listing (ConnInfo.Calls, LastActivity): a caller with an
// identity, on a connection whose context carries its activity record.
func (c *callHooks) counted(ctx context.Context, known bool, now time.Time) {
	if !known {
		return
	}
	if act := activityOf(ctx); act != nil {
		act.called(now.UnixNano())
	}
}

// begin records when the call of req begins: in its message's slot, or
// else in starts under req.
func (c *callHooks) begin(ctx context.Context, req any) {
	now := time.Now()
	if !policy.MarkStart(ctx, now) {
		c.starts.Store(req, now)
	}
}

// lasted returns how long the call of req has lasted at now (begin); 0
// for a call that never began (a protocol error before its handler).
func (c *callHooks) lasted(ctx context.Context, req any, now time.Time) time.Duration {
	if start, ok := policy.Started(ctx); ok {
		return now.Sub(start)
	}
	if start, ok := c.starts.LoadAndDelete(req); ok {
		return now.Sub(start.(time.Time))
	}
	return 0
}
