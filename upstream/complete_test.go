package upstream_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// complete asks c for completions of an argument of ref.
func complete(c *client.Client, ref any, arg, value string) ([]string, error) {
	req := mcp.CompleteRequest{}
	req.Params.Ref = ref
	req.Params.Argument = mcp.CompleteArgument{Name: arg, Value: value}
	res, err := c.Complete(context.Background(), req)
	if err != nil {
		return nil, err
	}
	return res.Completion.Values, nil
}

// TestUpstreamCompletions: completion/complete of an upstream prompt's
// argument (by its listed name) and of a resource template's variable is
// forwarded, with the caller's identity, to the upstream that offers it,
// for the callers the policy lets get or read it, and audited as a
// completion with the decision; anyone else gets permission denied, and a
// prompt nobody offers is an error. Before, the gateway declared no
// completions, so a client could not complete upstream arguments at all.
func TestUpstreamCompletions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		upstream func(t *testing.T) func(pub string) config.Upstream
	}{
		{name: "stdio", upstream: func(*testing.T) func(string) config.Upstream {
			return func(pub string) config.Upstream { return stdioUpstream("up", pub) }
		}},
		{name: "http", upstream: func(t *testing.T) func(string) config.Upstream {
			return func(pub string) config.Upstream { return config.Upstream{Name: "up", URL: startHTTPUpstream(t, pub)} }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, tt.upstream(t))
			clients := map[string]*client.Client{}
			for _, name := range []string{"bot", "reader", "other"} {
				clients[name] = f.g.Client(f.g.Cert(name, pki.RoleAgent))
			}
			prompt := mcp.PromptReference{Type: "ref/prompt", Name: "up.greet"}
			template := mcp.ResourceReference{Type: "ref/resource", URI: "test://up/item/{id}"}
			cases := []struct {
				who     string
				ref     any
				arg     string
				value   string
				want    []string // nil: an error containing wantErr
				wantErr string
			}{
				{who: "bot", ref: prompt, arg: "who", value: "al", want: []string{"alice", "albert", "asked-by:bot"}},
				{who: "bot", ref: template, arg: "id", value: "1", want: []string{"1", "12", "asked-by:bot"}},
				{who: "reader", ref: prompt, arg: "who", value: "b", want: []string{"bob", "asked-by:reader"}},
				{who: "reader", ref: template, arg: "id", value: "1", wantErr: "permission denied"},
				{who: "other", ref: prompt, arg: "who", value: "a", wantErr: "permission denied"},
				{who: "bot", ref: mcp.PromptReference{Type: "ref/prompt", Name: "up.nope"}, arg: "x", wantErr: "no such prompt"},
				{who: "bot", ref: mcp.ResourceReference{Type: "ref/resource", URI: "test://up/other/{id}"}, arg: "id", wantErr: "not found"},
			}
			for _, c := range cases {
				got, err := complete(clients[c.who], c.ref, c.arg, c.value)
				switch {
				case c.want != nil && (err != nil || !slices.Equal(got, c.want)):
					t.Errorf("%s completes %+v %s=%q: %q, %v; want %q", c.who, c.ref, c.arg, c.value, got, err, c.want)
				case c.want == nil && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
					t.Errorf("%s completes %+v: %q, %v; want an error saying %q", c.who, c.ref, got, err, c.wantErr)
				}
			}

			type key struct{ tool, who, outcome string }
			got := map[key]bool{}
			for _, r := range f.g.AuditRecords() {
				if r.Event == "completion" && r.Agent != nil {
					got[key{r.Tool, r.Agent.Name, r.Outcome}] = true
				}
			}
			for _, k := range []key{
				{"up.prompt:greet", "bot", "ok"},
				{"up.resource:test://up/item/{id}", "bot", "ok"},
				{"up.resource:test://up/item/{id}", "reader", "denied"},
				{"up.prompt:greet", "other", "denied"},
				{"up.nope", "bot", "error"},
			} {
				if !got[k] {
					t.Errorf("audit: no completion record %+v (have %v)", k, got)
				}
			}
		})
	}
}
