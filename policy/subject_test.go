package policy_test

import (
	"context"
	"testing"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
)

// TestDecideSubjects (issue 12 item 2): prompts and resources of upstreams
// are decided as <up>.prompt:<name> and <up>.resource:<uri>; * crosses the
// slashes of URIs, an upstream-wide glob covers them, a tool glob does not.
func TestDecideSubjects(t *testing.T) {
	t.Parallel()
	p, err := policy.New([]policy.Rule{
		{Name: "fsbot", Allow: []string{"fs.read_*"}},
		{Name: "srv", Allow: []string{"fs.resource:file:///srv/*", "fs.prompt:review"}},
		{Name: "all-fs", Allow: []string{"fs.*"}},
		{Role: pki.RoleOperator, Allow: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		who     string
		role    pki.Role
		subject string
		want    bool
	}{
		{name: "operator * covers a resource URI with slashes", who: "op", role: pki.RoleOperator, subject: policy.ResourceSubject("fs", "file:///etc/passwd"), want: true},
		{name: "operator * covers a prompt", who: "op", role: pki.RoleOperator, subject: policy.PromptSubject("fs", "review"), want: true},
		{name: "upstream glob covers its resources", who: "all-fs", role: pki.RoleAgent, subject: policy.ResourceSubject("fs", "file:///a/b/c"), want: true},
		{name: "upstream glob covers its prompts", who: "all-fs", role: pki.RoleAgent, subject: policy.PromptSubject("fs", "x"), want: true},
		{name: "upstream glob does not cover another upstream", who: "all-fs", role: pki.RoleAgent, subject: policy.ResourceSubject("tickets", "t://1"), want: false},
		{name: "tool glob grants no prompt of a matching name", who: "fsbot", role: pki.RoleAgent, subject: policy.PromptSubject("fs", "read_me"), want: false},
		{name: "tool glob still grants tools", who: "fsbot", role: pki.RoleAgent, subject: "fs.read_file", want: true},
		{name: "URI prefix glob crosses directories", who: "srv", role: pki.RoleAgent, subject: policy.ResourceSubject("fs", "file:///srv/a/b.txt"), want: true},
		{name: "URI prefix glob stops at its prefix", who: "srv", role: pki.RoleAgent, subject: policy.ResourceSubject("fs", "file:///etc/x"), want: false},
		{name: "named prompt", who: "srv", role: pki.RoleAgent, subject: policy.PromptSubject("fs", "review"), want: true},
		{name: "other prompt", who: "srv", role: pki.RoleAgent, subject: policy.PromptSubject("fs", "reviews"), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := p.Decide(agent(tt.who, tt.role), tt.subject); got.Allowed != tt.want {
				t.Errorf("Decide(%s, %q) = %v (%s), want %v", tt.who, tt.subject, got.Allowed, got.Reason, tt.want)
			}
		})
	}
}

// TestEnforceFailsClosed: a read or get whose context carries no enforcer
// (a server without nefia's authorization) is denied; one with an enforcer
// records the decision for the audit trail.
func TestEnforceFailsClosed(t *testing.T) {
	t.Parallel()
	if d := policy.Enforce(context.Background(), "up.prompt:x"); d.Allowed {
		t.Fatalf("Enforce without an enforcer = %+v, want denied", d)
	}
	ctx := policy.WithSlot(context.Background())
	ctx = policy.WithEnforcer(ctx, func(s string) policy.Decision { return policy.Decision{Allowed: true, Tool: s} })
	if d := policy.Enforce(ctx, "up.prompt:x"); !d.Allowed {
		t.Fatalf("Enforce = %+v, want allowed", d)
	}
	if d, ok := policy.DecisionFromContext(ctx); !ok || d.Tool != "up.prompt:x" {
		t.Errorf("recorded decision = %+v, %v", d, ok)
	}
	if got := policy.UpstreamOf("up.resource:a://b"); got != "up" {
		t.Errorf("UpstreamOf = %q", got)
	}
	if got := policy.UpstreamOf("up.read_file"); got != "" {
		t.Errorf("UpstreamOf(tool) = %q, want empty", got)
	}
}
