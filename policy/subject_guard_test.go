package policy_test

import (
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
)

// TestToolGlobGrantsNoResource: a tool glob that starts with * ("*_public",
// meant for tools such as tickets.list_public) grants no resource or
// prompt, whatever URI or name the client picks for a template read: only
// "*", "<up>.*" and patterns naming the kind do (issue 12, attack item 1).
func TestToolGlobGrantsNoResource(t *testing.T) {
	t.Parallel()
	p, err := policy.New([]policy.Rule{
		{Name: "bot", Allow: []string{"nefia.mtls.status", "*_public", "*.read_*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	bot := agent("bot", pki.RoleAgent)
	for _, subject := range []string{
		policy.ResourceSubject("vault", "vault://prod/db-password#x_public"),
		policy.ResourceSubject("fs", "file:///etc/shadow?_public"),
		policy.ResourceSubject("fs", "file:///home/alice/.ssh/id_ed25519#.read_x"),
		policy.PromptSubject("admin", "drop_everything.read_me"),
	} {
		if d := p.Decide(bot, subject); d.Allowed {
			t.Errorf("tool globs grant %q: %s", subject, d.Reason)
		}
	}
	if d := p.Decide(bot, "tickets.list_public"); !d.Allowed {
		t.Errorf("the tool glob no longer grants its tool: %s", d.Reason)
	}
	grants, err := policy.New([]policy.Rule{{Name: "bot", Allow: []string{"vault.*", "*.prompt:review", "docs.resource:file:///srv/*"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, subject string
		want          bool
	}{
		{"upstream star grants its resource", policy.ResourceSubject("vault", "vault://prod/db"), true},
		{"upstream star grants no other upstream", policy.ResourceSubject("vaults", "vault://prod/db"), false},
		{"kind pattern with upstream glob", policy.PromptSubject("admin", "review"), true},
		{"kind pattern grants no other kind", policy.ResourceSubject("admin", "review"), false},
		{"kind pattern grants no tool", "admin.review", false},
		{"resource pattern crosses slashes", policy.ResourceSubject("docs", "file:///srv/a/b.txt"), true},
		{"resource pattern keeps its prefix", policy.ResourceSubject("docs", "file:///etc/shadow"), false},
	} {
		if d := grants.Decide(bot, tc.subject); d.Allowed != tc.want {
			t.Errorf("%s: %q allowed %v, want %v (%s)", tc.name, tc.subject, d.Allowed, tc.want, d.Reason)
		}
	}
}

// TestResourceURIWithDotSegmentsRefused: "docs.resource:file:///srv/shared/*"
// is matched on the URI's text, so Decide refuses URIs whose text is not
// what the upstream resolves: dot segments (plain or percent-encoded, any
// case, double-encoded), encoded separators, NUL and control characters
// (issue 12, attack item 2). A plain URI under the prefix stays allowed.
func TestResourceURIWithDotSegmentsRefused(t *testing.T) {
	t.Parallel()
	p, err := policy.New([]policy.Rule{
		{Name: "bot", Allow: []string{"docs.resource:file:///srv/shared/*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := mcp.NewResourceTemplate("file:///{+path}", "files").URITemplate
	bot := agent("bot", pki.RoleAgent)
	for _, uri := range []string{
		"file:///srv/shared/../../etc/shadow",
		"file:///srv/shared/%2e%2e/%2e%2e/etc/shadow",
		"file:///srv/shared/..%2f..%2fetc/shadow",
		"file:///srv/shared/%2E%2E/etc/shadow",
		"file:///srv/shared/.%2E/etc/shadow",
		"file:///srv/shared/%252e%252e/etc/shadow",
		"file:///srv/shared/..?x",
		"file:///srv/shared/x%5c..%5c..%5cetc",
		"file:///srv/shared/x\\..\\etc",
		"file:///srv/shared/a%00b",
		"file:///srv/shared/a\nb",
		"file:///srv/shared/./a",
	} {
		routed := tmpl.Regexp().MatchString(uri)
		if d := p.Decide(bot, policy.ResourceSubject("docs", uri)); d.Allowed {
			t.Errorf("%q (template file:///{+path} matches: %v) allowed by %s", uri, routed, d.Reason)
		}
	}
	// '/' is mapped to NUL before path.Match: a URI with a NUL where the
	// pattern has '/' matches too.
	if d := p.Decide(bot, policy.ResourceSubject("docs", "file:///srv\x00shared\x00x")); d.Allowed {
		t.Errorf("NUL conflated with '/': %s", d.Reason)
	}
	for _, uri := range []string{"file:///srv/shared/a.txt", "file:///srv/shared/.hidden/x..y", "file:///srv/shared/a%20b"} {
		if d := p.Decide(bot, policy.ResourceSubject("docs", uri)); !d.Allowed {
			t.Errorf("%q refused: %s", uri, d.Reason)
		}
	}
	if d := p.Decide(bot, policy.ResourceSubject("docs", "file:///srv/shared/../x")); !strings.Contains(d.Reason, "dot segment") {
		t.Errorf("the denial does not say why: %s", d.Reason)
	}
}
