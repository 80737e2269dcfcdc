package server

import (
	"context"
	"log/slog"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/policy"
)

// installItems applies the policy to resources, resource templates and
// prompts (which upstreams offer, package upstream): each list shows a
// caller only what the policy allows it, under the subjects
// policy.ResourceSubject and policy.PromptSubject; reads and gets carry an
// enforcer in their context (policy.WithEnforcer), with which the handler
// decides the one resource or prompt it routes to. The handler, not this
// middleware, decides because only it knows which upstream serves a URI
// (a template of one upstream may match it).
func (a *Authorizer) installItems(hooks *mcpserver.Hooks, log *slog.Logger) []mcpserver.ServerOption {
	hooks.AddAfterListResources(func(ctx context.Context, _ any, _ *mcp.ListResourcesRequest, result *mcp.ListResourcesResult) {
		allowed := a.allows(ctx)
		visible := result.Resources[:0:0]
		for _, r := range result.Resources {
			if allowed(policy.ResourceSubject(metaUpstream(r.Meta), r.URI)) {
				visible = append(visible, r)
			}
		}
		result.Resources = visible
	})
	hooks.AddAfterListResourceTemplates(func(ctx context.Context, _ any, _ *mcp.ListResourceTemplatesRequest, result *mcp.ListResourceTemplatesResult) {
		allowed := a.allows(ctx)
		visible := result.ResourceTemplates[:0:0]
		for _, t := range result.ResourceTemplates {
			if t.URITemplate != nil && allowed(policy.ResourceSubject(metaUpstream(t.Meta), t.URITemplate.Raw())) {
				visible = append(visible, t)
			}
		}
		result.ResourceTemplates = visible
	})
	hooks.AddAfterListPrompts(func(ctx context.Context, _ any, _ *mcp.ListPromptsRequest, result *mcp.ListPromptsResult) {
		allowed := a.allows(ctx)
		visible := result.Prompts[:0:0]
		for _, p := range result.Prompts {
			if allowed(promptSubject(p)) {
				visible = append(visible, p)
			}
		}
		result.Prompts = visible
	})
	return []mcpserver.ServerOption{
		mcpserver.WithResourceHandlerMiddleware(func(next mcpserver.ResourceHandlerFunc) mcpserver.ResourceHandlerFunc {
			return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
				return next(a.withEnforcer(ctx, log), req)
			}
		}),
		mcpserver.WithPromptHandlerMiddleware(func(next mcpserver.PromptHandlerFunc) mcpserver.PromptHandlerFunc {
			return func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				return next(a.withEnforcer(ctx, log), req)
			}
		}),
	}
}

// allows decides subjects for the caller of ctx under the policy in force
// now (one policy for a whole list).
func (a *Authorizer) allows(ctx context.Context) func(subject string) bool {
	agent, _ := identity.FromContext(ctx)
	p := a.Policy()
	return func(subject string) bool { return p.Decide(agent, subject).Allowed }
}

// withEnforcer gives a read or get the policy in force when it arrived,
// bound to its caller; denials are logged as tool calls' are.
func (a *Authorizer) withEnforcer(ctx context.Context, log *slog.Logger) context.Context {
	return a.enforcer(ctx, log, a.Policy(), "read denied")
}

// Enforcing gives ctx an enforcer (policy.Enforce) bound to its caller
// (identity.WithAgent must have put it there), deciding each subject with
// the policy in force at that moment. Transports add it with the caller's
// identity, so that a handler that routes a request itself (a completion:
// only the upstream package knows which prompt or template it names, and
// mcp-go has no middleware for it) can decide it; without an enforcer,
// Enforce denies. Reads and gets get the policy in force when they arrived
// on top of it (withEnforcer).
func (a *Authorizer) Enforcing(ctx context.Context, log *slog.Logger) context.Context {
	return a.enforcer(ctx, log, nil, "request denied")
}

// enforcer gives ctx an enforcer bound to its caller that decides with p,
// or with the policy in force at each decision when p is nil, and logs a
// denial as denied.
func (a *Authorizer) enforcer(ctx context.Context, log *slog.Logger, p *policy.Policy, denied string) context.Context {
	agent, _ := identity.FromContext(ctx)
	return policy.WithEnforcer(ctx, func(subject string) policy.Decision {
		in := p
		if in == nil {
			in = a.Policy()
		}
		d := in.Decide(agent, subject)
		if !d.Allowed {
			log.Warn(denied, "subject", subject, "name", agent.Name, "serial", agent.Serial,
				"role", agent.Role, "reason", d.Reason)
		}
		return d
	})
}

// metaUpstream is the upstream a listed item came from
// (observe.MetaUpstream in its _meta); "" for none.
func metaUpstream(m *mcp.Meta) string {
	if m == nil {
		return ""
	}
	up, _ := m.AdditionalFields[observe.MetaUpstream].(string)
	return up
}

// promptSubject is the policy subject of a listed prompt: an upstream's
// prompt is listed as <upstream>.<name> and decided as
// <upstream>.prompt:<name>.
func promptSubject(p mcp.Prompt) string {
	up := metaUpstream(p.Meta)
	if up != "" && len(p.Name) > len(up) && p.Name[:len(up)+1] == up+"." {
		return policy.PromptSubject(up, p.Name[len(up)+1:])
	}
	return policy.PromptSubject(up, p.Name)
}
