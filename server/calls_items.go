package server

import (
	"context"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/policy"
)

// installItems reports every resources/read and prompts/get as a call
// event, as install does for tools/call: read and get of what upstreams
// offer are forwarded calls too (issue 12 item 2), audited with the
// decision their handler enforced.
func (c *callHooks) installItems(h *mcpserver.Hooks) {
	h.AddBeforeReadResource(func(ctx context.Context, _ any, req *mcp.ReadResourceRequest) {
		c.begin(ctx, req)
	})
	h.AddAfterReadResource(func(ctx context.Context, _ any, req *mcp.ReadResourceRequest, _ *mcp.ReadResourceResult) {
		c.reportItem(ctx, req, mcp.MethodResourcesRead, req.Params.URI, map[string]any{"uri": req.Params.URI}, audit.OutcomeOK, "")
	})
	h.AddBeforeGetPrompt(func(ctx context.Context, _ any, req *mcp.GetPromptRequest) {
		c.begin(ctx, req)
	})
	h.AddAfterGetPrompt(func(ctx context.Context, _ any, req *mcp.GetPromptRequest, _ *mcp.GetPromptResult) {
		c.reportItem(ctx, req, mcp.MethodPromptsGet, req.Params.Name, promptArgs(req), audit.OutcomeOK, "")
	})
	h.AddBeforeComplete(func(ctx context.Context, _ any, req *mcp.CompleteRequest) {
		c.begin(ctx, req)
	})
	h.AddAfterComplete(func(ctx context.Context, _ any, req *mcp.CompleteRequest, _ *mcp.CompleteResult) {
		c.reportItem(ctx, req, mcp.MethodCompletionComplete, completeRef(req), completeArgs(req), audit.OutcomeOK, "")
	})
	h.AddOnError(func(ctx context.Context, _ any, method mcp.MCPMethod, message any, err error) {
		switch req := message.(type) {
		case *mcp.CompleteRequest:
			if method == mcp.MethodCompletionComplete {
				c.reportItem(ctx, req, method, completeRef(req), completeArgs(req), audit.OutcomeError, err.Error())
			}
		case *mcp.ReadResourceRequest:
			if method == mcp.MethodResourcesRead {
				c.reportItem(ctx, req, method, req.Params.URI, map[string]any{"uri": req.Params.URI}, audit.OutcomeError, err.Error())
			}
		case *mcp.GetPromptRequest:
			if method == mcp.MethodPromptsGet {
				c.reportItem(ctx, req, method, req.Params.Name, promptArgs(req), audit.OutcomeError, err.Error())
			}
		}
	})
}

// reportItem builds the event of a read or get. Its Tool is the subject
// the handler's decision names, when the decision is for what was asked
// (the URI read, or the prompt of that listed name); else what was asked.
func (c *callHooks) reportItem(ctx context.Context, key any, method mcp.MCPMethod, asked string, args map[string]any, outcome, errText string) {
	e := observe.CallEvent{Tool: asked, Args: args, Outcome: outcome, Error: errText, Method: string(method)}
	e.Agent, e.Known = identity.FromContext(ctx)
	if e.Agent.SessionID == "" {
		if s := mcpserver.ClientSessionFromContext(ctx); s != nil {
			e.Agent.SessionID = s.SessionID()
		}
	}
	if d, ok := policy.DecisionFromContext(ctx); ok && decidesItem(d.Tool, method, asked) {
		e.Tool, e.Decision, e.Upstream = d.Tool, d.String(), policy.UpstreamOf(d.Tool)
		if !d.Allowed {
			e.Outcome = audit.OutcomeDenied
		}
	}
	now := time.Now()
	e.Duration = c.lasted(ctx, key, now)
	c.counted(ctx, e.Known, now)
	c.obs.Call(e)
}

// decidesItem reports whether subject is the policy subject of what a
// read (a URI), a get (a listed prompt name) or a completion (either)
// asked for.
func decidesItem(subject string, method mcp.MCPMethod, asked string) bool {
	up := policy.UpstreamOf(subject)
	if up == "" {
		return false
	}
	if subject == policy.ResourceSubject(up, asked) && method != mcp.MethodPromptsGet {
		return true
	}
	name, ok := strings.CutPrefix(asked, up+".")
	return ok && subject == policy.PromptSubject(up, name) && method != mcp.MethodResourcesRead
}

// completeRef is what a completion asked about: the prompt's listed name
// or the resource's URI (template text).
func completeRef(req *mcp.CompleteRequest) string {
	switch ref := req.Params.Ref.(type) {
	case mcp.PromptReference:
		return ref.Name
	case mcp.ResourceReference:
		return ref.URI
	}
	return ""
}

// completeArgs are a completion's audited arguments: which argument, the
// text typed so far, and the arguments already resolved. audit.Redact
// decides by key, so the typed text of a secret-named argument is
// redacted here, and the context is a map[string]any, which Redact walks
// (a map[string]string it passes through whole).
func completeArgs(req *mcp.CompleteRequest) map[string]any {
	var value any = req.Params.Argument.Value
	if audit.SecretKey(req.Params.Argument.Name) {
		value = audit.Redacted
	}
	args := map[string]any{"argument": req.Params.Argument.Name, "value": value}
	if len(req.Params.Context.Arguments) > 0 {
		args["context"] = anyValues(req.Params.Context.Arguments)
	}
	return args
}

func promptArgs(req *mcp.GetPromptRequest) map[string]any {
	return anyValues(req.Params.Arguments)
}

// anyValues copies string arguments into the map[string]any that
// audit.Redact walks (a map[string]string it passes through whole).
func anyValues(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// callEvent is the audit event of a call event's method.
func callEvent(method string) string {
	switch mcp.MCPMethod(method) {
	case mcp.MethodResourcesRead:
		return audit.EventResourceRead
	case mcp.MethodPromptsGet:
		return audit.EventPromptGet
	case mcp.MethodCompletionComplete:
		return audit.EventComplete
	}
	return audit.EventToolCall
}
