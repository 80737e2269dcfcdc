package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/tools"
)

// auditor puts every tool call and every state change on the audit trail.
//
// tool_call records come from mcp-go's hooks rather than middleware, so calls
// that never reach a handler (unknown tools, bad arguments) are recorded
// too: AfterCallTool sees every call that produced a result (denials and
// tool errors included), OnError every call that failed as a protocol error.
// mcp-go fires exactly one of the two per call.
//
// State-changing tools are additionally wrapped by guard: their event
// (mtls.issue_client, ...) is written durably before the tool runs, and the
// tool is refused if it cannot be.
type auditor struct {
	trail *audit.Logger
	log   *slog.Logger
	// starts maps a call's request (mcp-go passes the same
	// *CallToolRequest to BeforeCallTool and to AfterCallTool or OnError) to
	// when it began. Session ids would not do: stateless 2026-07-28 HTTP
	// requests have none, and JSON-RPC ids repeat across clients.
	starts sync.Map
	// refusals rate-limits connection_rejected records; summary is armed
	// by the first refusal it suppresses and writes the window's summary.
	refusals  *refusalLimiter
	summaryMu sync.Mutex
	summary   *time.Timer
}

func newAuditor(trail *audit.Logger, log *slog.Logger) *auditor {
	return &auditor{trail: trail, log: log, refusals: newRefusalLimiter(time.Now)}
}

// close writes the summary of refusals suppressed so far; the gateway calls
// it when it stops serving.
func (a *auditor) close() {
	a.summaryMu.Lock()
	if a.summary != nil {
		a.summary.Stop()
		a.summary = nil
	}
	a.summaryMu.Unlock()
	a.summarize(a.refusals.flush())
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
	// pair guard writes (fsynced before the result goes out); this one
	// joins the next group write.
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

// guard refuses a state-changing tool call whose starting record cannot be
// written, and records how the call ended.
func (a *auditor) guard() mcpserver.ToolHandlerMiddleware {
	return func(next mcpserver.ToolHandlerFunc) mcpserver.ToolHandlerFunc {
		return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			event, ok := tools.StateEvent(req.Params.Name)
			if !ok {
				return next(ctx, req)
			}
			r := baseRecord(ctx, event)
			r.Tool = req.Params.Name
			r.Args = audit.Redact(req.GetArguments())
			if d, ok := a.decision(ctx, r.Tool); ok {
				r.Decision = d.String()
			}
			end, err := a.trail.Begin(r)
			if err != nil {
				a.log.Error("state-changing call refused: audit trail unavailable", "tool", r.Tool, "error", err)
				return mcp.NewToolResultError("refused: the audit trail is unavailable, so nothing was changed; an operator must fix the gateway's audit directory"), nil
			}
			res, callErr := next(ctx, req)
			outcome, result, failure := audit.OutcomeOK, resultMap(res), callErr
			if callErr != nil || res == nil || res.IsError {
				outcome = audit.OutcomeError
				if failure == nil && res != nil {
					failure = errors.New(resultText(res))
				}
			}
			if err := end(outcome, result, failure); err != nil {
				a.log.Error("state change not fully audited", "tool", r.Tool, "error", err)
			}
			return res, callErr
		}
	}
}

// connection records a connection event; they are not durable one by one
// (group commit), unlike state changes. Refusals go through refused.
func (a *auditor) connection(event string, agent *identity.Agent, remote, reason string, err error) {
	if event == audit.EventConnectionRejected {
		a.refused(refusal{remote: remote, reason: reason, who: agent, err: err})
		return
	}
	a.write(connectionRecord(event, agent, remote, reason, err))
}

// refusal is a refused connection: who is nil when no certificate was
// presented, and unverified when the one presented did not verify.
type refusal struct {
	remote, reason string
	who            *identity.Agent
	unverified     bool
	err            error
}

// refused records a refused connection, unless the rate limit for its
// address (or for all refusals) suppresses it: then it is counted for the
// window's summary.
func (a *auditor) refused(f refusal) {
	serial := ""
	if f.who != nil {
		serial = f.who.Serial
	}
	ok, ended := a.refusals.allow(f.remote, f.reason, serial, f.who != nil && !f.unverified)
	a.summarize(ended)
	if !ok {
		a.summaryMu.Lock()
		if a.summary == nil {
			a.summary = time.AfterFunc(refusalWindow, func() {
				a.summaryMu.Lock()
				a.summary = nil
				a.summaryMu.Unlock()
				a.summarize(a.refusals.flush())
			})
		}
		a.summaryMu.Unlock()
		return
	}
	r := connectionRecord(audit.EventConnectionRejected, f.who, f.remote, f.reason, f.err)
	if r.Agent != nil {
		r.Agent.Unverified = f.unverified
	}
	a.write(r)
}

// summarize writes one connection_rejected_suppressed record per address
// of a window's suppressed refusals.
func (a *auditor) summarize(counts []suppressedCount) {
	for _, c := range counts {
		byReason := make(map[string]any, len(c.byReason))
		for k, v := range c.byReason {
			byReason[k] = v
		}
		r := audit.Record{Event: audit.EventConnectionRejectedSuppressed, RemoteAddr: c.addr, Outcome: audit.OutcomeDenied,
			Reason: c.reason(), Result: map[string]any{"suppressed": c.total, "by_reason": byReason}}
		if c.serial != "" {
			r.Agent = &audit.Agent{Serial: c.serial}
		}
		a.write(r)
	}
}

func connectionRecord(event string, agent *identity.Agent, remote, reason string, err error) audit.Record {
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
	return r
}

func (a *auditor) write(r audit.Record) {
	if aerr := a.trail.Append(r, false); aerr != nil {
		a.log.Error("connection event not audited", "event", r.Event, "error", aerr)
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

// resultMap is a call result's structured content for the ending record of a
// state change (Redact then removes PEM bodies from it).
func resultMap(res *mcp.CallToolResult) map[string]any {
	if res == nil {
		return nil
	}
	return audit.ToMap(res.StructuredContent)
}
