package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/policy"
)

// auditor puts every tool call and every state change on the audit trail.
//
// tool_call records come from mcp-go's hooks rather than middleware, so calls
// that never reach a handler (unknown tools, bad arguments) are recorded
// too: AfterCallTool sees every call that produced a result (denials and
// tool errors included), OnError every call that failed as a protocol error.
// mcp-go fires exactly one of the two per call.
//
// State-changing tools additionally record their event (mtls.issue_client,
// ...) durably before they act, and are refused if it cannot be written:
// the operation layer (package ops) does that for the tools and the CLI
// alike, on the trail tools.Deps.Audit.
type auditor struct {
	trail *audit.Logger
	log   *slog.Logger
	// starts maps a call's request (mcp-go passes the same
	// *CallToolRequest to BeforeCallTool and to AfterCallTool or OnError) to
	// when it began. Session ids would not do: stateless 2026-07-28 HTTP
	// requests have none, and JSON-RPC ids repeat across clients.
	starts sync.Map
}

func newAuditor(trail *audit.Logger, log *slog.Logger) *auditor {
	return &auditor{trail: trail, log: log}
}

func (a *auditor) install(h *mcpserver.Hooks) {
	h.AddBeforeCallTool(func(_ context.Context, _ any, req *mcp.CallToolRequest) {
		a.starts.Store(req, time.Now())
	})
	h.AddAfterCallTool(func(ctx context.Context, _ any, req *mcp.CallToolRequest, result any) {
		outcome, errText := audit.OutcomeOK, ""
		if res, ok := result.(*mcp.CallToolResult); ok && res.IsError {
			outcome, errText = audit.OutcomeError, resultText(res)
		}
		// The decision authorize enforced, not a new one: the policy may
		// have been swapped since.
		if d, ok := a.decision(ctx, req.Params.Name); ok && !d.Allowed {
			outcome = audit.OutcomeDenied
		}
		a.toolCall(ctx, req, outcome, errText)
	})
	h.AddOnError(func(ctx context.Context, _ any, method mcp.MCPMethod, message any, err error) {
		if method != mcp.MethodToolsCall {
			return
		}
		req, _ := message.(*mcp.CallToolRequest)
		if req == nil {
			req = &mcp.CallToolRequest{}
		}
		a.toolCall(ctx, req, audit.OutcomeError, err.Error())
	})
}

func (a *auditor) toolCall(ctx context.Context, req *mcp.CallToolRequest, outcome, errText string) {
	r := baseRecord(ctx, audit.EventToolCall)
	r.Tool = req.Params.Name
	r.Args = audit.Redact(req.GetArguments())
	r.Outcome = outcome
	r.Error = errText
	if d, ok := a.decision(ctx, r.Tool); ok {
		r.Decision = d.String()
	}
	if start, ok := a.starts.LoadAndDelete(req); ok {
		r.DurationMS = float64(time.Since(start.(time.Time)).Microseconds()) / 1000
	}
	// Batched even for state changes: their durable record is the event
	// pair the operation writes (fsynced before the result goes out); this
	// one joins the next group write.
	if err := a.trail.Append(r, false); err != nil {
		a.log.Error("tool call not audited", "tool", r.Tool, "error", err)
	}
}

// decision returns the authorization decision recorded for the call of
// tool in ctx's request; ok is false for a call that never reached
// authorization (unknown tool, invalid arguments). A decision for another
// tool means a transport shared one decision slot between requests: it is
// ignored, and said, rather than recorded against the wrong call.
func (a *auditor) decision(ctx context.Context, tool string) (policy.Decision, bool) {
	d, ok := policy.DecisionFromContext(ctx)
	if ok && d.Tool != tool {
		a.log.Error("authorization decision is for another call; a transport shares decision slots", "tool", tool, "decided", d.Tool)
		return policy.Decision{}, false
	}
	return d, ok
}

// connection records a connection event; they are not durable one by one
// (group commit), unlike state changes.
func (a *auditor) connection(event string, agent *identity.Agent, remote, reason string, err error) {
	r := audit.Record{Event: event, RemoteAddr: remote, Reason: reason, Transport: identity.TransportStream}
	if agent != nil {
		r.Agent = &audit.Agent{Name: agent.Name, Serial: agent.Serial, Role: string(agent.Role)}
		r.SessionID = agent.SessionID
		r.Transport = agent.Transport
	}
	r.Outcome = audit.OutcomeOK
	if event == audit.EventConnectionRejected {
		r.Outcome = audit.OutcomeDenied
	}
	if err != nil {
		r.Error = err.Error()
	}
	if aerr := a.trail.Append(r, false); aerr != nil {
		a.log.Error("connection event not audited", "event", event, "error", aerr)
	}
}

func baseRecord(ctx context.Context, event string) audit.Record {
	r := audit.Record{Event: event}
	if agent, ok := identity.FromContext(ctx); ok {
		r.Agent = &audit.Agent{Name: agent.Name, Serial: agent.Serial, Role: string(agent.Role)}
		r.SessionID = agent.SessionID
		r.RemoteAddr = agent.RemoteAddr
		r.Transport = agent.Transport
	}
	if r.SessionID == "" {
		if s := mcpserver.ClientSessionFromContext(ctx); s != nil {
			r.SessionID = s.SessionID()
		}
	}
	return r
}

func resultText(res *mcp.CallToolResult) string {
	for _, c := range res.Content {
		if t, ok := c.(mcp.TextContent); ok {
			return t.Text
		}
	}
	return "tool error"
}
