package upstream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/policy"
)

// Resources, resource templates and prompts of upstreams (issue 12 item 2).
//
// Prompts are listed as <upstream>.<prompt>, like tools. Resources keep
// the URI their upstream gave them: URIs are what tool results, prompt
// messages and resource links refer to, and rewriting them would break
// every such reference. An index routes a URI to its upstream; a URI (or a
// URI template's text) that a second upstream also offers is dropped from
// that one, with a warning naming both, so that a read never goes to an
// upstream chosen by chance. A URI that no listed resource has is read
// through the first upstream, in mcp.upstreams order, one of whose
// templates matches it. The policy decides <upstream>.prompt:<name> and
// <upstream>.resource:<uri> (package policy); the gateway filters the lists
// with it and each read or get is decided here, once its upstream is known.

// maxURIBytes bounds a resource URI or URI template an upstream may list;
// longer ones are skipped.
const maxURIBytes = 4096

// items is what one upstream registered besides tools, under u.mu.
type items struct {
	resources map[string]struct{} // URIs registered on srv for u
	templates []mcp.ResourceTemplate
	prompts   map[string]struct{} // prefixed names registered on srv
}

// index routes resources and templates across the upstreams of a Manager:
// who owns each URI and template text, and the upstreams in configuration
// order for template matching.
type index struct {
	// pub serializes publishTemplates, so that a slower publication
	// never overwrites a newer one.
	pub   sync.Mutex
	mu    sync.Mutex
	srv   *mcpserver.MCPServer
	ups   []*upstream
	owner map[string]*upstream // "r:"+uri and "t:"+template text
}

func newIndex() *index { return &index{owner: map[string]*upstream{}} }

// setUpstreams records the upstreams in configuration order.
func (x *index) setUpstreams(ups []*upstream) {
	x.mu.Lock()
	x.ups = slices.Clone(ups)
	x.mu.Unlock()
}

// claim gives key to u unless another upstream holds it; it returns the
// holder when that is another one.
func (x *index) claim(u *upstream, key string) *upstream {
	x.mu.Lock()
	defer x.mu.Unlock()
	if o, ok := x.owner[key]; ok && o != u {
		return o
	}
	x.owner[key] = u
	return nil
}

// release gives up u's keys.
func (x *index) release(u *upstream, keys ...string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, k := range keys {
		if x.owner[k] == u {
			delete(x.owner, k)
		}
	}
}

// publishTemplates replaces the server's templates with those every
// upstream holds, in configuration order.
func (x *index) publishTemplates() {
	x.pub.Lock()
	defer x.pub.Unlock()
	x.mu.Lock()
	var all []mcpserver.ServerResourceTemplate
	for _, u := range x.ups {
		u.mu.Lock()
		for _, t := range u.it.templates {
			all = append(all, mcpserver.ServerResourceTemplate{Template: t, Handler: x.readByTemplate})
		}
		u.mu.Unlock()
	}
	srv := x.srv
	x.mu.Unlock()
	if srv != nil {
		srv.SetResourceTemplates(all...)
	}
}

// readByTemplate reads a URI that matched a template: through the first
// upstream, in configuration order, one of whose templates matches it.
func (x *index) readByTemplate(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
	x.mu.Lock()
	ups := slices.Clone(x.ups)
	x.mu.Unlock()
	for _, u := range ups {
		if u.templateMatches(req.Params.URI) {
			return u.readResource(ctx, req.Params.URI)
		}
	}
	return nil, fmt.Errorf("resource %q: %w", req.Params.URI, mcpserver.ErrResourceNotFound)
}

func (u *upstream) templateMatches(uri string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.it.templates {
		if t.URITemplate != nil && t.URITemplate.Regexp().MatchString(uri) {
			return true
		}
	}
	return false
}

// withUpstream is m with observe.MetaUpstream set to name, over anything
// the upstream sent under that key (as for tools).
func withUpstream(m *mcp.Meta, name string) *mcp.Meta {
	out := &mcp.Meta{}
	if m != nil {
		out.ProgressToken = m.ProgressToken
		out.AdditionalFields = maps.Clone(m.AdditionalFields)
	}
	if out.AdditionalFields == nil {
		out.AdditionalFields = map[string]any{}
	}
	out.AdditionalFields[observe.MetaUpstream] = name
	return out
}

// listItems fetches the upstream's resources, templates and prompts (those
// its capabilities offer) and replaces what it registered on the server.
// A kind that fails to list keeps its previous registrations and is
// logged: tools still work.
func (u *upstream) listItems(ctx context.Context, cn *conn) {
	ctx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	caps := cn.c.GetServerCapabilities()
	if caps.Resources == nil {
		u.setResources(nil)
		u.setTemplates(nil)
	} else {
		if rs, err := pages(func(c mcp.Cursor) ([]mcp.Resource, mcp.Cursor, error) {
			req := mcp.ListResourcesRequest{}
			req.Params.Cursor = c
			r, err := cn.c.ListResourcesByPage(ctx, req)
			if err != nil {
				return nil, "", err
			}
			return r.Resources, r.NextCursor, nil
		}); err != nil {
			u.log.Warn("list resources", "err", err)
		} else {
			u.setResources(rs)
		}
		if ts, err := pages(func(c mcp.Cursor) ([]mcp.ResourceTemplate, mcp.Cursor, error) {
			req := mcp.ListResourceTemplatesRequest{}
			req.Params.Cursor = c
			r, err := cn.c.ListResourceTemplatesByPage(ctx, req)
			if err != nil {
				return nil, "", err
			}
			return r.ResourceTemplates, r.NextCursor, nil
		}); err != nil {
			u.log.Warn("list resource templates", "err", err)
		} else {
			u.setTemplates(ts)
		}
	}
	if caps.Prompts == nil {
		u.setPrompts(nil)
	} else if ps, err := pages(func(c mcp.Cursor) ([]mcp.Prompt, mcp.Cursor, error) {
		req := mcp.ListPromptsRequest{}
		req.Params.Cursor = c
		r, err := cn.c.ListPromptsByPage(ctx, req)
		if err != nil {
			return nil, "", err
		}
		return r.Prompts, r.NextCursor, nil
	}); err != nil {
		u.log.Warn("list prompts", "err", err)
	} else {
		u.setPrompts(ps)
	}
}

// pages follows a list's cursors, at most maxListPages pages and maxTools
// items, as for tools: an upstream cannot make the gateway hold an
// unbounded list.
func pages[T any](fetch func(mcp.Cursor) ([]T, mcp.Cursor, error)) ([]T, error) {
	var all []T
	var cursor mcp.Cursor
	for range maxListPages {
		items, next, err := fetch(cursor)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if len(all) > maxTools {
			return nil, fmt.Errorf("more than %d items", maxTools)
		}
		if next == "" {
			return all, nil
		}
		cursor = next
	}
	return nil, fmt.Errorf("more than %d pages", maxListPages)
}

// setResources registers rs (the upstream's whole list) for u, deleting
// what it no longer offers.
func (u *upstream) setResources(rs []mcp.Resource) {
	var add []mcpserver.ServerResource
	keep := map[string]struct{}{}
	for _, r := range rs {
		if r.URI == "" || len(r.URI) > maxURIBytes || len(keep) >= maxTools {
			u.log.Warn("skipping upstream resource: empty, longer than the limit, or too many", "uri_bytes", len(r.URI))
			continue
		}
		if _, dup := keep[r.URI]; dup {
			continue
		}
		if o := u.idx.claim(u, "r:"+r.URI); o != nil {
			u.log.Warn("skipping upstream resource: another upstream offers the same URI", "uri", r.URI, "owner", o.cfg.Name)
			continue
		}
		keep[r.URI] = struct{}{}
		r.Meta = withUpstream(r.Meta, u.cfg.Name)
		uri := r.URI
		add = append(add, mcpserver.ServerResource{Resource: r, Handler: func(ctx context.Context, _ mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			return u.readResource(ctx, uri)
		}})
	}
	u.mu.Lock()
	var stale []string
	for uri := range u.it.resources {
		if _, ok := keep[uri]; !ok {
			stale = append(stale, uri)
		}
	}
	u.it.resources = keep
	u.mu.Unlock()
	if len(stale) > 0 {
		u.srv.DeleteResources(stale...)
		keys := make([]string, len(stale))
		for i, s := range stale {
			keys[i] = "r:" + s
		}
		u.idx.release(u, keys...)
	}
	if len(add) > 0 {
		u.srv.AddResources(add...)
	}
}

// setTemplates records ts (the upstream's whole list) for u and publishes
// every upstream's templates.
func (u *upstream) setTemplates(ts []mcp.ResourceTemplate) {
	var keep []mcp.ResourceTemplate
	seen := map[string]struct{}{}
	for _, t := range ts {
		if t.URITemplate == nil || t.URITemplate.Raw() == "" || len(t.URITemplate.Raw()) > maxURIBytes || len(keep) >= maxTools {
			continue
		}
		raw := t.URITemplate.Raw()
		if _, dup := seen[raw]; dup {
			continue
		}
		if o := u.idx.claim(u, "t:"+raw); o != nil {
			u.log.Warn("skipping upstream resource template: another upstream offers the same one", "template", raw, "owner", o.cfg.Name)
			continue
		}
		seen[raw] = struct{}{}
		t.Meta = withUpstream(t.Meta, u.cfg.Name)
		keep = append(keep, t)
	}
	u.mu.Lock()
	old := u.it.templates
	u.it.templates = keep
	u.mu.Unlock()
	var stale []string
	for _, t := range old {
		if _, ok := seen[t.URITemplate.Raw()]; !ok {
			stale = append(stale, "t:"+t.URITemplate.Raw())
		}
	}
	u.idx.release(u, stale...)
	if len(old) > 0 || len(keep) > 0 {
		u.idx.publishTemplates()
	}
}

// setPrompts registers ps (the upstream's whole list) as
// <upstream>.<prompt>, deleting what it no longer offers.
func (u *upstream) setPrompts(ps []mcp.Prompt) {
	var add []mcpserver.ServerPrompt
	keep := map[string]struct{}{}
	for _, p := range ps {
		if !toolName.MatchString(p.Name) || len(keep) >= maxTools {
			u.log.Warn("skipping upstream prompt: name is not [A-Za-z0-9_.-]{1,128}, or too many", "prompt", p.Name)
			continue
		}
		original := p.Name
		p.Name = u.cfg.Name + "." + original
		if _, dup := keep[p.Name]; dup {
			continue
		}
		keep[p.Name] = struct{}{}
		p.Meta = withUpstream(p.Meta, u.cfg.Name)
		add = append(add, mcpserver.ServerPrompt{Prompt: p, Handler: func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return u.getPrompt(ctx, original, req.Params.Arguments)
		}})
	}
	u.mu.Lock()
	var stale []string
	for n := range u.it.prompts {
		if _, ok := keep[n]; !ok {
			stale = append(stale, n)
		}
	}
	u.it.prompts = keep
	u.mu.Unlock()
	if len(stale) > 0 {
		u.srv.DeletePrompts(stale...)
	}
	if len(add) > 0 {
		u.srv.AddPrompts(add...)
	}
}

// dropItems removes everything u registered besides tools, when it is
// stopped for good (removed or changed by a reload).
func (u *upstream) dropItems() {
	u.setResources(nil)
	u.setTemplates(nil)
	u.setPrompts(nil)
}

// readResource forwards resources/read of uri, once the policy allows the
// caller <upstream>.resource:<uri>.
func (u *upstream) readResource(ctx context.Context, uri string) ([]mcp.ResourceContents, error) {
	if d := policy.Enforce(ctx, policy.ResourceSubject(u.cfg.Name, uri)); !d.Allowed {
		return nil, fmt.Errorf("%w: %s", policy.ErrDenied, d.Reason)
	}
	cn, err := u.connFor(ctx)
	if err != nil {
		return nil, err
	}
	req := mcp.ReadResourceRequest{}
	req.Params.URI = uri
	cctx, cancel, err := u.forwarded(ctx, &req.Params.Meta)
	if err != nil {
		return nil, err
	}
	defer cancel()
	res, err := cn.c.ReadResource(cctx, req)
	if err != nil {
		return nil, u.forwardError(ctx, cctx, cn, "resources/read "+uri, err)
	}
	return res.Contents, nil
}

// getPrompt forwards prompts/get of the upstream's prompt original, once
// the policy allows the caller <upstream>.prompt:<original>.
func (u *upstream) getPrompt(ctx context.Context, original string, args map[string]string) (*mcp.GetPromptResult, error) {
	if d := policy.Enforce(ctx, policy.PromptSubject(u.cfg.Name, original)); !d.Allowed {
		return nil, fmt.Errorf("%w: %s", policy.ErrDenied, d.Reason)
	}
	cn, err := u.connFor(ctx)
	if err != nil {
		return nil, err
	}
	req := mcp.GetPromptRequest{}
	req.Params.Name = original
	req.Params.Arguments = args
	cctx, cancel, err := u.forwarded(ctx, &req.Params.Meta)
	if err != nil {
		return nil, err
	}
	defer cancel()
	res, err := cn.c.GetPrompt(cctx, req)
	if err != nil {
		return nil, u.forwardError(ctx, cctx, cn, "prompts/get "+original, err)
	}
	return res, nil
}

// forwarded prepares a request to the upstream on behalf of the caller of
// ctx: a fresh _meta with only nefia's keys (the caller's identity and its
// signed assertion), the identity headers for an HTTP upstream, and the
// call_timeout.
func (u *upstream) forwarded(ctx context.Context, meta **mcp.Meta) (context.Context, context.CancelFunc, error) {
	fields := map[string]any{}
	agent, ok := identity.FromContext(ctx)
	var token string
	if ok {
		fields[MetaAgent] = agentMeta(agent)
		if u.signer != nil {
			var err error
			if token, err = u.signer.Assertion(u.cfg.Name, agent, time.Now()); err != nil {
				return nil, nil, err
			}
			fields[MetaAssertion] = token
		}
	}
	*meta = &mcp.Meta{AdditionalFields: fields}
	cctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout())
	if ok {
		cctx = withHeaders(cctx, agent, token)
	}
	cctx, _ = withLimitFlag(cctx)
	return cctx, cancel, nil
}

// forwardError turns a failed forwarded read or get into the error the
// client gets: a timeout or a broken upstream says so; the upstream's own
// JSON-RPC error is passed on.
func (u *upstream) forwardError(ctx, cctx context.Context, cn *conn, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		u.log.Warn("upstream request timed out", "request", what, "timeout", u.cfg.Timeout())
		return fmt.Errorf("upstream %q timed out: %s did not answer within %s (call_timeout)", u.cfg.Name, what, u.cfg.Timeout())
	case tooLarge(limitFlag(cctx), err):
		return u.tooLargeError()
	case isTransportError(err):
		u.broken(cn, err)
		return fmt.Errorf("upstream %q is down: %w", u.cfg.Name, err)
	}
	return err
}
