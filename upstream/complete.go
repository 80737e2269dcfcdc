package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/policy"
)

// Completions (completion/complete) of upstream prompts and resources:
// the argument suggestions a client shows while the user fills in a
// prompt's arguments or a resource template's variables. A reference is
// routed like a get or a read: a prompt by its listed name
// (<upstream>.<prompt>, forwarded under the upstream's own name), a
// resource by the template text or URI as listed, to the upstream the
// index gives it. Only what the caller may get or read is completed (the
// same policy subjects), and the request carries the caller's identity
// like every forwarded one.

// maxCompletionValues is what the specification allows in one answer;
// an upstream that sends more is cut to it.
const maxCompletionValues = 100

// completeIDs numbers forwarded completions ("nefia-complete-N").
var completeIDs atomic.Int64

// completeRef is the reference of a forwarded completion/complete.
type completeRef struct {
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
	URI  string `json:"uri,omitempty"`
}

// completeParams are completion/complete's params as forwarded; mcp-go's
// CompleteParams has no _meta, which carries the caller's identity.
type completeParams struct {
	Meta     *mcp.Meta            `json:"_meta,omitempty"`
	Ref      completeRef          `json:"ref"`
	Argument mcp.CompleteArgument `json:"argument"`
	Context  *mcp.CompleteContext `json:"context,omitempty"`
}

// completer is the gateway's mcpserver.PromptCompletionProvider and
// ResourceCompletionProvider when upstreams are configured.
type completer struct{ idx *index }

// CompletePromptArgument completes an argument of the upstream prompt
// listed as name.
func (c completer) CompletePromptArgument(ctx context.Context, name string, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	ups, _ := c.idx.upstreams()
	for _, u := range ups {
		original, ok := strings.CutPrefix(name, u.cfg.Name+".")
		if !ok {
			continue
		}
		u.mu.Lock()
		_, listed := u.it.prompts[name]
		u.mu.Unlock()
		if !listed {
			break
		}
		return u.complete(ctx, policy.PromptSubject(u.cfg.Name, original), completeRef{Type: "ref/prompt", Name: original}, arg, cc)
	}
	return nil, fmt.Errorf("prompt %q: no such prompt", name)
}

// CompleteResourceArgument completes a variable of the resource template
// (or resource) listed as uri: through the upstream whose template it is,
// else the one whose resource it is, each the first in configuration
// order, as the index routes reads.
func (c completer) CompleteResourceArgument(ctx context.Context, uri string, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	ups, _ := c.idx.upstreams()
	for _, offers := range []func(*upstream) bool{
		func(u *upstream) bool { return u.offersTemplate(uri) },
		func(u *upstream) bool { return u.offersResource(uri) },
	} {
		for _, u := range ups {
			if offers(u) {
				return u.complete(ctx, policy.ResourceSubject(u.cfg.Name, uri), completeRef{Type: "ref/resource", URI: uri}, arg, cc)
			}
		}
	}
	return nil, fmt.Errorf("resource %q: %w", uri, mcpserver.ErrResourceNotFound)
}

// offersTemplate reports whether u lists a resource template whose text
// is raw.
func (u *upstream) offersTemplate(raw string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.it.templates {
		if t.URITemplate != nil && t.URITemplate.Raw() == raw {
			return true
		}
	}
	return false
}

// offersResource reports whether u lists a resource of that URI.
func (u *upstream) offersResource(uri string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.it.resources[uri]
	return ok
}

// complete forwards completion/complete of ref, once the policy allows
// the caller subject (the prompt or resource the reference names). An
// upstream that declared no completions capability has none to give: the
// answer is empty, as from a server without suggestions.
func (u *upstream) complete(ctx context.Context, subject string, ref completeRef, arg mcp.CompleteArgument, cc mcp.CompleteContext) (*mcp.Completion, error) {
	cn, err := u.admit(ctx, subject)
	if err != nil {
		return nil, err
	}
	if cn.c.GetServerCapabilities().Completions == nil {
		return &mcp.Completion{Values: []string{}}, nil
	}
	p := &completeParams{Ref: ref, Argument: arg}
	if len(cc.Arguments) > 0 {
		p.Context = &cc
	}
	cctx, cancel, err := u.forwarded(ctx, &p.Meta)
	if err != nil {
		return nil, err
	}
	defer cancel()
	what := "completion/complete " + ref.Name + ref.URI
	raw, err := sendRequest(cctx, cn, mcp.MethodCompletionComplete, "nefia-complete-"+strconv.FormatInt(completeIDs.Add(1), 10), p)
	if err != nil {
		return nil, u.forwardError(ctx, cctx, cn, what, err)
	}
	var res mcp.CompleteResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, fmt.Errorf("upstream %q: %s: a malformed answer: %w", u.cfg.Name, what, err)
	}
	c := res.Completion
	if len(c.Values) > maxCompletionValues {
		c.Values, c.HasMore = c.Values[:maxCompletionValues], true
	}
	if c.Values == nil {
		c.Values = []string{}
	}
	return &c, nil
}
