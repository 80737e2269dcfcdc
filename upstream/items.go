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
// every such reference. An index routes a URI to its upstream: a URI (or a
// URI template's text) that several upstreams offer belongs to the first of
// them in mcp.upstreams order, whichever listed it first, and the others'
// are dropped with a warning naming both; an earlier upstream that lists
// it later (it started later, or its list changed) takes it back. So a
// read never goes to an upstream chosen by timing (issue 12, attack item
// 6). A URI that a listed resource has is read through that resource's
// upstream, even if an earlier upstream has a template matching it; a URI
// that no listed resource has is read through the first upstream, in
// mcp.upstreams order, one of whose templates matches it. The policy decides <upstream>.prompt:<name> and
// <upstream>.resource:<uri> (package policy); the gateway filters the lists
// with it and each read or get is decided here, once its upstream is known.

// maxURIBytes bounds a resource URI or URI template an upstream may list;
// longer ones are skipped.
const maxURIBytes = 4096

// items is what one upstream offers besides tools, under u.mu: all of
// it, whether the index gives it this upstream or an earlier one.
type items struct {
	resources map[string]mcp.Resource // by URI, _meta set
	templates []mcp.ResourceTemplate
	prompts   map[string]struct{} // prefixed names registered on srv
}

// index routes resources and templates across the upstreams of a Manager:
// each URI and template text belongs to the first upstream, in
// configuration order, that offers it.
type index struct {
	// pub serializes publications, so that a slower publication never
	// overwrites a newer one.
	pub sync.Mutex
	mu  sync.Mutex
	srv *mcpserver.MCPServer
	ups []*upstream
}

func newIndex() *index { return &index{} }

// setUpstreams records the upstreams in configuration order.
func (x *index) setUpstreams(ups []*upstream) {
	x.mu.Lock()
	x.ups = slices.Clone(ups)
	x.mu.Unlock()
}

// upstreams returns the upstreams in configuration order and the server.
func (x *index) upstreams() ([]*upstream, *mcpserver.MCPServer) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.ups), x.srv
}

// publishResources registers each of uris on the server with the resource
// and handler of its owner, the first upstream in configuration order that
// lists it or has a template matching it, and deletes those no upstream
// lists any more, or whose owner serves them by its template (the template
// handler routes the read there). The others that list one are told, in
// their log, who serves it.
func (x *index) publishResources(uris []string) {
	if len(uris) == 0 {
		return
	}
	x.pub.Lock()
	defer x.pub.Unlock()
	ups, srv := x.upstreams()
	if srv == nil {
		return
	}
	var add []mcpserver.ServerResource
	var del []string
	for _, uri := range uris {
		var owner *upstream
		for _, u := range ups {
			u.mu.Lock()
			r, ok := u.it.resources[uri]
			u.mu.Unlock()
			switch {
			case !ok && owner == nil && u.templateMatches(uri):
				owner = u // by its template: no static entry
			case !ok:
			case owner == nil:
				owner = u
				add = append(add, mcpserver.ServerResource{Resource: r, Handler: func(ctx context.Context, _ mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
					return u.readResource(ctx, uri)
				}})
			default:
				u.log.Warn("skipping upstream resource: an upstream earlier in mcp.upstreams offers the same URI", "uri", uri, "owner", owner.cfg.Name)
			}
		}
		if owner == nil || len(add) == 0 || add[len(add)-1].Resource.URI != uri {
			del = append(del, uri)
		}
	}
	if len(del) > 0 {
		srv.DeleteResources(del...)
	}
	if len(add) > 0 {
		srv.AddResources(add...)
	}
}

// publishAll publishes every upstream's resources and templates again,
// after the configuration order changed.
func (x *index) publishAll() {
	ups, _ := x.upstreams()
	var uris []string
	for _, u := range ups {
		u.mu.Lock()
		for uri := range u.it.resources {
			uris = append(uris, uri)
		}
		u.mu.Unlock()
	}
	slices.Sort(uris)
	x.publishResources(slices.Compact(uris))
	x.publishTemplates()
}

// publishTemplates replaces the server's templates with those the
// upstreams offer, in configuration order; a template text a second
// upstream also offers is the first one's.
func (x *index) publishTemplates() {
	x.pub.Lock()
	defer x.pub.Unlock()
	ups, srv := x.upstreams()
	var all []mcpserver.ServerResourceTemplate
	owner := map[string]string{}
	for _, u := range ups {
		u.mu.Lock()
		for _, t := range u.it.templates {
			raw := t.URITemplate.Raw()
			if o, dup := owner[raw]; dup {
				u.log.Warn("skipping upstream resource template: an upstream earlier in mcp.upstreams offers the same one", "template", raw, "owner", o)
				continue
			}
			owner[raw] = u.cfg.Name
			all = append(all, mcpserver.ServerResourceTemplate{Template: t, Handler: x.readByTemplate})
		}
		u.mu.Unlock()
	}
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

// setResources records rs (the upstream's whole list) for u and publishes
// what changed: URIs it now offers and URIs it no longer does.
func (u *upstream) setResources(rs []mcp.Resource) {
	keep := map[string]mcp.Resource{}
	for _, r := range rs {
		if r.URI == "" || len(r.URI) > maxURIBytes || len(keep) >= maxTools {
			u.log.Warn("skipping upstream resource: empty, longer than the limit, or too many", "uri_bytes", len(r.URI))
			continue
		}
		if _, dup := keep[r.URI]; dup {
			continue
		}
		r.Meta = withUpstream(r.Meta, u.cfg.Name)
		keep[r.URI] = r
	}
	u.mu.Lock()
	changed := slices.Collect(maps.Keys(keep))
	for uri := range u.it.resources {
		if _, ok := keep[uri]; !ok {
			changed = append(changed, uri)
		}
	}
	u.it.resources = keep
	u.mu.Unlock()
	slices.Sort(changed)
	u.idx.publishResources(changed)
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
		seen[raw] = struct{}{}
		t.Meta = withUpstream(t.Meta, u.cfg.Name)
		keep = append(keep, t)
	}
	u.mu.Lock()
	old := u.it.templates
	u.it.templates = keep
	u.mu.Unlock()
	if len(old) > 0 || len(keep) > 0 {
		// All resources too: a template of an earlier upstream takes the
		// URIs it matches from a later upstream's static resources.
		u.idx.publishAll()
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

// admit is the connection a request forwarded for the caller of ctx goes
// out on (a resource read, a prompt get, a completion), once the policy
// allows the caller subject, which is checked first: a denied caller
// never starts or waits for the upstream.
func (u *upstream) admit(ctx context.Context, subject string) (*conn, error) {
	if d := policy.Enforce(ctx, subject); !d.Allowed {
		return nil, fmt.Errorf("%w: %s", policy.ErrDenied, d.Reason)
	}
	return u.connFor(ctx)
}

// readResource forwards resources/read of uri, once the policy allows the
// caller <upstream>.resource:<uri>.
func (u *upstream) readResource(ctx context.Context, uri string) ([]mcp.ResourceContents, error) {
	cn, err := u.admit(ctx, policy.ResourceSubject(u.cfg.Name, uri))
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
	cn, err := u.admit(ctx, policy.PromptSubject(u.cfg.Name, original))
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
