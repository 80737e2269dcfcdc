package upstream_test

import (
	"context"
	"encoding/json"
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
	for _, tt := range bothTransports {
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

// TestCompletionAuditRedactsSecrets: a completion's audit record redacts
// what a prompts/get's would: the text typed into an argument whose name
// names a secret, and the secret-named arguments of its context. Before,
// the typed text went under the key "value" and the context as a
// map[string]string, which audit.Redact passes through, so the trail held
// "s3cr3t-typed" and "hunter2" in clear.
func TestCompletionAuditRedactsSecrets(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	c := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	req := mcp.CompleteRequest{}
	req.Params.Ref = mcp.PromptReference{Type: "ref/prompt", Name: "up.greet"}
	req.Params.Argument = mcp.CompleteArgument{Name: "api_token", Value: "s3cr3t-typed"}
	req.Params.Context = mcp.CompleteContext{Arguments: map[string]string{"password": "hunter2", "who": "al"}}
	if _, err := c.Complete(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range f.g.AuditRecords() {
		if r.Event != "completion" {
			continue
		}
		found = true
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"s3cr3t-typed", "hunter2"} {
			if strings.Contains(string(line), secret) {
				t.Errorf("the completion record holds %q in clear: %s", secret, line)
			}
		}
		if !strings.Contains(string(line), `"al"`) {
			t.Errorf("the completion record lost the context's plain argument: %s", line)
		}
	}
	if !found {
		t.Fatal("no completion record")
	}
}
