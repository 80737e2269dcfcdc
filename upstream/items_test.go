package upstream_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// itemLists is what one caller sees of resources, templates and prompts.
type itemLists struct{ resources, templates, prompts []string }

func listItems(t *testing.T, c *client.Client) itemLists {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var l itemLists
	rs, err := c.ListResources(ctx, mcp.ListResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs.Resources {
		l.resources = append(l.resources, r.URI)
	}
	ts, err := c.ListResourceTemplates(ctx, mcp.ListResourceTemplatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range ts.ResourceTemplates {
		l.templates = append(l.templates, tp.URITemplate.Raw())
	}
	ps, err := c.ListPrompts(ctx, mcp.ListPromptsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps.Prompts {
		l.prompts = append(l.prompts, p.Name)
	}
	return l
}

func readResource(c *client.Client, uri string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mcp.ReadResourceRequest{}
	req.Params.URI = uri
	res, err := c.ReadResource(ctx, req)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, ct := range res.Contents {
		if tc, ok := ct.(mcp.TextResourceContents); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String(), nil
}

func getPrompt(c *client.Client, name string, args map[string]string) (*mcp.GetPromptResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mcp.GetPromptRequest{}
	req.Params.Name, req.Params.Arguments = name, args
	return c.GetPrompt(ctx, req)
}

// seenIdentity decodes what the test upstream answered: the _meta it got
// and the assertion as it verified it.
func seenIdentity(t *testing.T, text string) (agent map[string]any, verified any) {
	t.Helper()
	var got struct {
		Meta     map[string]any `json:"meta"`
		Verified any            `json:"verified"`
	}
	if err := json.Unmarshal([]byte(text), &got); err != nil {
		t.Fatalf("upstream answer %q: %v", text, err)
	}
	agent, _ = got.Meta[upstream.MetaAgent].(map[string]any)
	return agent, got.Verified
}

// TestUpstreamResourcesAndPrompts (issue 12 item 2): an upstream's
// resources (URI kept), resource templates and prompts (as up.<name>) are
// listed through the gateway and read or got with the caller's identity
// and a verifiable assertion; the policy filters lists and reads alike
// (bot: up.*; reader: the static resource and the prompt only; other:
// nothing), a denied read or get is refused and audited as denied.
func TestUpstreamResourcesAndPrompts(t *testing.T) {
	t.Parallel()
	for _, tt := range bothTransports {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, tt.upstream(t))
			iss := f.g.Issue("bot", pki.RoleAgent, time.Hour)
			bot := f.g.Client(pkitest.KeyPair(t, iss))
			reader := f.g.Client(f.g.Cert("reader", pki.RoleAgent))
			other := f.g.Client(f.g.Cert("other", pki.RoleAgent))

			lists := []struct {
				name string
				c    *client.Client
				want itemLists
			}{
				{name: "bot", c: bot, want: itemLists{[]string{"test://up/static"}, []string{"test://up/item/{id}"}, []string{"up.greet"}}},
				{name: "reader", c: reader, want: itemLists{[]string{"test://up/static"}, nil, []string{"up.greet"}}},
				{name: "other", c: other, want: itemLists{}},
			}
			for _, l := range lists {
				got := listItems(t, l.c)
				if !slices.Equal(got.resources, l.want.resources) || !slices.Equal(got.templates, l.want.templates) || !slices.Equal(got.prompts, l.want.prompts) {
					t.Errorf("%s lists %+v, want %+v", l.name, got, l.want)
				}
			}

			// Reads and gets carry the caller's identity, verifiable upstream.
			for _, uri := range []string{"test://up/static", "test://up/item/42"} {
				txt, err := readResource(bot, uri)
				if err != nil {
					t.Fatalf("bot reads %s: %v", uri, err)
				}
				agent, verified := seenIdentity(t, txt)
				if agent["name"] != "bot" || agent["serial"] != iss.Serial {
					t.Errorf("%s: upstream saw agent %v", uri, agent)
				}
				if v, ok := verified.(map[string]any); !ok || v["name"] != "bot" || v["aud"] != "up" {
					t.Errorf("%s: assertion verified upstream as %v", uri, verified)
				}
			}
			pr, err := getPrompt(bot, "up.greet", map[string]string{"who": "ann"})
			if err != nil {
				t.Fatal(err)
			}
			if pr.Description != "hello ann" || len(pr.Messages) != 1 {
				t.Fatalf("up.greet = %+v", pr)
			}
			if agent, _ := seenIdentity(t, pr.Messages[0].Content.(mcp.TextContent).Text); agent["name"] != "bot" {
				t.Errorf("prompt: upstream saw agent %v", agent)
			}

			// What a list hides cannot be read either.
			denied := []struct {
				name string
				do   func() error
			}{
				{name: "reader reads through the template", do: func() error { _, err := readResource(reader, "test://up/item/1"); return err }},
				{name: "other reads the static resource", do: func() error { _, err := readResource(other, "test://up/static"); return err }},
				{name: "other gets the prompt", do: func() error { _, err := getPrompt(other, "up.greet", map[string]string{"who": "x"}); return err }},
			}
			for _, d := range denied {
				if err := d.do(); err == nil || !strings.Contains(err.Error(), "permission denied") {
					t.Errorf("%s: err = %v, want permission denied", d.name, err)
				}
			}
			if _, err := readResource(reader, "test://up/static"); err != nil {
				t.Errorf("reader reads the static resource: %v", err)
			}

			type key struct{ event, tool, who, outcome string }
			got := map[key]string{}
			for _, r := range f.g.AuditRecords() {
				if r.Agent != nil {
					got[key{r.Event, r.Tool, r.Agent.Name, r.Outcome}] = r.Upstream
				}
			}
			for _, k := range []key{
				{"resource_read", "up.resource:test://up/static", "bot", "ok"},
				{"resource_read", "up.resource:test://up/item/42", "bot", "ok"},
				{"prompt_get", "up.prompt:greet", "bot", "ok"},
				{"resource_read", "up.resource:test://up/item/1", "reader", "denied"},
				{"resource_read", "up.resource:test://up/static", "other", "denied"},
				{"prompt_get", "up.prompt:greet", "other", "denied"},
			} {
				if up, ok := got[k]; !ok || up != "up" {
					t.Errorf("audit: no record %+v naming upstream up (got %q, %v)", k, up, ok)
				}
			}
		})
	}
}

// TestUpstreamPromptsListChanged: a prompt the upstream adds reaches
// connected clients as notifications/prompts/list_changed and in
// prompts/list.
func TestUpstreamPromptsListChanged(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	changed := make(chan struct{}, 10)
	bot.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == mcp.MethodNotificationPromptsListChanged {
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	})
	if slices.Contains(listItems(t, bot).prompts, "up.later") {
		t.Fatal("up.later listed before it exists")
	}
	servertest.CallOK(t, bot, "up.grow_prompt", nil)
	deadline := time.After(10 * time.Second)
	for !slices.Contains(listItems(t, bot).prompts, "up.later") {
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("up.later not listed within 10s: %v", listItems(t, bot).prompts)
		}
	}
	if pr, err := getPrompt(bot, "up.later", nil); err != nil || len(pr.Messages) != 1 {
		t.Errorf("up.later = %+v, %v", pr, err)
	}
}

// TestUpstreamResourceCollision: two upstreams offering the same URI and
// template do not both get them: the URI is listed once and read through
// the upstream that holds it, which the audit record names; prompts never
// collide (up.greet, up2.greet). The gateway declares the resources and
// prompts capabilities, with list_changed.
func TestUpstreamResourceCollision(t *testing.T) {
	t.Parallel()
	f := startGatewayUps(t, func(pub string) []config.Upstream {
		return []config.Upstream{stdioUpstream("up", pub), stdioUpstream("up2", pub)}
	})
	wide := f.g.Client(f.g.Cert("wide", pki.RoleAgent))
	caps := wide.GetServerCapabilities()
	if caps.Resources == nil || !caps.Resources.ListChanged || caps.Prompts == nil || !caps.Prompts.ListChanged {
		t.Errorf("capabilities = %+v, want resources and prompts with listChanged", caps)
	}
	l := listItems(t, wide)
	if !slices.Equal(l.resources, []string{"test://up/static"}) || !slices.Equal(l.templates, []string{"test://up/item/{id}"}) {
		t.Errorf("lists %+v, want the URI and the template once", l)
	}
	if !slices.Equal(l.prompts, []string{"up.greet", "up2.greet"}) {
		t.Errorf("prompts %v, want up.greet and up2.greet", l.prompts)
	}
	for _, uri := range []string{"test://up/static", "test://up/item/7"} {
		if _, err := readResource(wide, uri); err != nil {
			t.Fatalf("read %s: %v", uri, err)
		}
	}
	owners := map[string]string{}
	for _, r := range f.g.AuditRecords() {
		if r.Event == "resource_read" && r.Outcome == "ok" {
			owners[r.Tool] = r.Upstream
		}
	}
	if len(owners) != 2 {
		t.Fatalf("resource_read records: %v", owners)
	}
	for subject, up := range owners {
		if !strings.HasPrefix(subject, up+".resource:") {
			t.Errorf("record %s names upstream %s", subject, up)
		}
	}
}

// TestFirstUpstreamAddedByUpdate: a gateway started without upstreams
// declares resources, prompts (with list_changed) and completions all the
// same, so a client learns them at initialize and sees the prompts of an
// upstream a reload adds later (before, prompts/list answered "prompts not
// supported" until a restart).
func TestFirstUpstreamAddedByUpdate(t *testing.T) {
	t.Parallel()
	f := startGatewayUps(t, func(string) []config.Upstream { return nil })
	early := f.g.Client(f.g.Cert("wide", pki.RoleAgent)) // connected before the upstream exists
	caps := early.GetServerCapabilities()
	if caps.Resources == nil || !caps.Resources.ListChanged || caps.Prompts == nil || !caps.Prompts.ListChanged || caps.Completions == nil {
		t.Fatalf("capabilities without upstreams = %+v, want resources and prompts with listChanged, and completions", caps)
	}
	if got := listItems(t, early); len(got.prompts)+len(got.resources)+len(got.templates) != 0 {
		t.Fatalf("items without upstreams = %+v, want none", got)
	}
	if err := f.m.Update([]config.Upstream{stdioUpstream("up", f.pub)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !slices.Equal(listItems(t, early).prompts, []string{"up.greet"}) {
		if time.Now().After(deadline) {
			t.Fatalf("prompts after the first upstream was added = %v, want [up.greet]", listItems(t, early).prompts)
		}
		time.Sleep(50 * time.Millisecond) // polling the new upstream's first listing
	}
}

// TestManagerUpdateItems: a configuration update that removes upstream up
// and adds two moves the resources, the template and the prompts with it:
// two's are listed and read through two, up's prompts are gone.
func TestManagerUpdateItems(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	wide := f.g.Client(f.g.Cert("wide", pki.RoleAgent))
	if got := listItems(t, wide).prompts; !slices.Equal(got, []string{"up.greet"}) {
		t.Fatalf("prompts before the update = %v", got)
	}
	if err := f.m.Update([]config.Upstream{stdioUpstream("two", "")}); err != nil {
		t.Fatal(err)
	}
	want := itemLists{[]string{"test://up/static"}, []string{"test://up/item/{id}"}, []string{"two.greet"}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := listItems(t, wide)
		if slices.Equal(got.resources, want.resources) && slices.Equal(got.templates, want.templates) && slices.Equal(got.prompts, want.prompts) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the update: %+v, want %+v", got, want)
		}
		time.Sleep(50 * time.Millisecond) // polling the new upstream's first listing
	}
	if _, err := readResource(wide, "test://up/item/5"); err != nil {
		t.Fatal(err)
	}
	for _, r := range f.g.AuditRecords() {
		if r.Event == "resource_read" && r.Tool == "two.resource:test://up/item/5" && r.Upstream == "two" && r.Outcome == "ok" {
			return
		}
	}
	t.Error("no resource_read record of test://up/item/5 through two")
}
