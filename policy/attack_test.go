package policy_test

import (
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
)

// TestAttackLeadingStarToolGlobGrantsResources: a tool glob that starts
// with * ("*_public", meant for tools such as tickets.list_public) now
// also matches resource subjects, because * crosses the ".resource:"
// boundary and (new in this diff) '/'. The URI of a template read is
// chosen by the client, so the client appends the glob's suffix (as a
// fragment, a query or an id) and reads ANY resource of ANY upstream
// that has a matching template. README claims a tool glob grants none.
func TestAttackLeadingStarToolGlobGrantsResources(t *testing.T) {
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
}

// TestAttackDotSegmentsEscapeURIPrefix: the README's own example
// "docs.resource:file:///srv/shared/*" is matched on the raw URI, so dot
// segments (plain or percent-encoded) that a {+path} template accepts
// escape the prefix; the upstream resolves them to /etc/shadow.
func TestAttackDotSegmentsEscapeURIPrefix(t *testing.T) {
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
}
