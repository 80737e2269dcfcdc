package policy_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
)

func agent(name string, role pki.Role) identity.Agent { return identity.Agent{Name: name, Role: role} }

// example is the mcp.policy of the package documentation.
func example(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.New([]policy.Rule{
		{Role: pki.RoleAgent, Allow: []string{"nefia.mtls.status", "fs.read_*", "fs.list_*"}},
		{Name: "ci-*", Allow: []string{"tickets.*"}},
		{Role: pki.RoleOperator, Allow: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDecide is the identity × tool table, fail-closed cases included.
func TestDecide(t *testing.T) {
	t.Parallel()
	def := policy.Default()
	cfg := example(t)
	tests := []struct {
		name    string
		p       *policy.Policy
		agent   identity.Agent
		tool    string
		allowed bool
		rule    int
		reason  string // substring of Reason
	}{
		{"default operator init", def, agent("root", pki.RoleOperator), "nefia.mtls.init", true, 0, `default[0] {role: operator} allows "*"`},
		{"default operator issue", def, agent("root", pki.RoleOperator), "nefia.mtls.issue_client", true, 0, ""},
		{"default operator revoke", def, agent("root", pki.RoleOperator), "nefia.mtls.revoke", true, 0, ""},
		{"default operator upstream tool", def, agent("root", pki.RoleOperator), "fs.read_file", true, 0, ""},
		{"default agent status", def, agent("bot", pki.RoleAgent), "nefia.mtls.status", true, 1, `default[1] {role: agent} allows "nefia.mtls.status"`},
		{"default agent init", def, agent("bot", pki.RoleAgent), "nefia.mtls.init", false, -1, "allows nefia.mtls.init"},
		{"default agent issue", def, agent("bot", pki.RoleAgent), "nefia.mtls.issue_client", false, -1, ""},
		{"default agent revoke", def, agent("bot", pki.RoleAgent), "nefia.mtls.revoke", false, -1, ""},
		{"default agent unknown tool", def, agent("bot", pki.RoleAgent), "nefia.mtls.frobnicate", false, -1, ""},
		{"default agent status prefix", def, agent("bot", pki.RoleAgent), "nefia.mtls.status2", false, -1, ""},
		{"no identity", def, identity.Agent{}, "nefia.mtls.status", false, -1, "no authenticated identity"},
		{"empty role", def, agent("bot", ""), "nefia.mtls.status", false, -1, "no nefia role"},
		{"unknown role", def, agent("bot", "admin"), "nefia.mtls.status", false, -1, `got "admin"`},
		{"role case matters", def, agent("bot", "Operator"), "nefia.mtls.init", false, -1, "no nefia role"},
		{"empty tool", def, agent("root", pki.RoleOperator), "", false, -1, "no tool name"},
		{"nil policy", nil, agent("root", pki.RoleOperator), "nefia.mtls.status", false, -1, "no authorization policy"},
		{"zero policy", &policy.Policy{}, agent("root", pki.RoleOperator), "nefia.mtls.status", false, -1, "no authorization policy"},
		{"config agent glob across dot", cfg, agent("bot", pki.RoleAgent), "fs.read_file", true, 0, `mcp.policy[0] {role: agent} allows "fs.read_*"`},
		{"config agent list", cfg, agent("bot", pki.RoleAgent), "fs.list_dir", true, 0, ""},
		{"config agent write", cfg, agent("bot", pki.RoleAgent), "fs.write_file", false, -1, "no rule of mcp.policy matching"},
		{"config agent nefia init", cfg, agent("bot", pki.RoleAgent), "nefia.mtls.init", false, -1, ""},
		{"config ci agent union", cfg, agent("ci-7", pki.RoleAgent), "tickets.create", true, 1, `mcp.policy[1] {name: "ci-*"} allows "tickets.*"`},
		{"config ci agent keeps role rule", cfg, agent("ci-7", pki.RoleAgent), "fs.read_file", true, 0, ""},
		{"config other agent no tickets", cfg, agent("bot", pki.RoleAgent), "tickets.create", false, -1, ""},
		{"config ci operator", cfg, agent("ci-7", pki.RoleOperator), "tickets.create", true, 1, ""},
		{"config operator all", cfg, agent("root", pki.RoleOperator), "nefia.mtls.revoke", true, 2, ""},
		{"config ci name is a glob not a prefix", cfg, agent("xci-7", pki.RoleAgent), "tickets.create", false, -1, ""},
		{"config unknown role", cfg, agent("ci-7", "admin"), "tickets.create", false, -1, "no nefia role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := tt.p.Decide(tt.agent, tt.tool)
			if d.Allowed != tt.allowed || d.Rule != tt.rule {
				t.Fatalf("Decide(%+v, %q) = %+v, want allowed %v rule %d", tt.agent, tt.tool, d, tt.allowed, tt.rule)
			}
			if d.Tool != tt.tool || !strings.Contains(d.Reason, tt.reason) || d.Reason == "" {
				t.Errorf("Decide(%+v, %q) = %+v, want tool %q and reason containing %q", tt.agent, tt.tool, d, tt.tool, tt.reason)
			}
		})
	}
}

func TestDecideNoMatchingRule(t *testing.T) {
	t.Parallel()
	p, err := policy.New([]policy.Rule{{Name: "ci-*", Allow: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decide(agent("root", pki.RoleOperator), "nefia.mtls.status")
	if d.Allowed || !strings.Contains(d.Reason, `no rule of mcp.policy matches name "root" with role operator`) {
		t.Fatalf("operator outside every rule: %+v", d)
	}
}

// TestNew covers validation: malformed globs and incomplete rules are
// rejected when the policy is built, and no rules means the default.
func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		rules   []policy.Rule
		wantErr []string // substrings; nil = valid
	}{
		{"nil rules", nil, nil},
		{"empty rules", []policy.Rule{}, nil},
		{"valid", []policy.Rule{{Role: pki.RoleAgent, Name: "a?[0-9]", Allow: []string{"x.*", `y\*`}}}, nil},
		{"no match", []policy.Rule{{Allow: []string{"*"}}}, []string{"mcp.policy[0]: match needs a role or a name"}},
		{"bad role", []policy.Rule{{Role: "admin", Allow: []string{"*"}}}, []string{`match.role must be agent or operator, got "admin"`}},
		{"bad name glob", []policy.Rule{{Name: "ci-[", Allow: []string{"*"}}}, []string{`match.name "ci-[" is not a valid glob`}},
		{"no allow", []policy.Rule{{Role: pki.RoleAgent}}, []string{"allow needs at least one"}},
		{"empty allow entry", []policy.Rule{{Role: pki.RoleAgent, Allow: []string{""}}}, []string{"allow[0] is empty"}},
		{"malformed allow glob", []policy.Rule{{Role: pki.RoleAgent, Allow: []string{"ok", "fs.[read"}}}, []string{`allow[1] "fs.[read" is not a valid glob`}},
		{"trailing backslash", []policy.Rule{{Role: pki.RoleAgent, Allow: []string{`fs\`}}}, []string{"allow[0]"}},
		{"every problem reported", []policy.Rule{
			{Role: pki.RoleAgent, Allow: []string{"*"}},
			{Allow: []string{"["}},
		}, []string{"mcp.policy[1]: match needs", `mcp.policy[1]: allow[0] "["`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := policy.New(tt.rules)
			if tt.wantErr == nil {
				if err != nil || p == nil {
					t.Fatalf("New() = %v, %v; want a policy", p, err)
				}
				if len(tt.rules) == 0 && p.Source() != policy.SourceDefault {
					t.Errorf("no rules gave source %q, want the default", p.Source())
				}
				return
			}
			if err == nil || !errors.Is(err, policy.ErrInvalid) {
				t.Fatalf("New() error = %v, want ErrInvalid", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New() error = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

// TestEmptyRulesAreDefault: an empty mcp.policy must decide exactly as the
// built-in default does, for every identity and tool.
func TestEmptyRulesAreDefault(t *testing.T) {
	t.Parallel()
	p, err := policy.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	def := policy.Default()
	for _, a := range []identity.Agent{{}, agent("root", pki.RoleOperator), agent("bot", pki.RoleAgent), agent("x", "admin")} {
		for _, tool := range []string{"nefia.mtls.init", "nefia.mtls.issue_client", "nefia.mtls.status", "nefia.mtls.revoke", "other.tool", ""} {
			if got, want := p.Decide(a, tool), def.Decide(a, tool); got != want {
				t.Errorf("Decide(%+v, %q) = %+v, default %+v", a, tool, got, want)
			}
		}
	}
}

// TestNewCopiesRules: the caller's slice cannot change a built policy.
func TestNewCopiesRules(t *testing.T) {
	t.Parallel()
	rules := []policy.Rule{{Role: pki.RoleAgent, Allow: []string{"nefia.mtls.status"}}}
	p, err := policy.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	rules[0].Allow[0] = "*"
	rules[0].Role = pki.RoleOperator
	if d := p.Decide(agent("bot", pki.RoleAgent), "nefia.mtls.init"); d.Allowed {
		t.Fatalf("editing the rules after New changed the policy: %+v", d)
	}
	p.Rules()[0].Allow[0] = "*"
	if d := p.Decide(agent("bot", pki.RoleAgent), "nefia.mtls.init"); d.Allowed {
		t.Fatalf("editing Rules() changed the policy: %+v", d)
	}
}

func TestAllowed(t *testing.T) {
	t.Parallel()
	names := []string{"nefia.mtls.init", "nefia.mtls.issue_client", "nefia.mtls.status", "nefia.mtls.revoke", "fs.read_file", "tickets.create"}
	cfg := example(t)
	if got, want := cfg.Allowed(agent("ci-1", pki.RoleAgent), names), []string{"nefia.mtls.status", "fs.read_file", "tickets.create"}; !slices.Equal(got, want) {
		t.Errorf("Allowed(ci agent) = %v, want %v", got, want)
	}
	if got := cfg.Allowed(identity.Agent{}, names); got != nil {
		t.Errorf("Allowed(no identity) = %v, want none", got)
	}
}

func TestDecisionContext(t *testing.T) {
	t.Parallel()
	if _, ok := policy.DecisionFromContext(t.Context()); ok {
		t.Fatal("a bare context has a decision")
	}
	outer := policy.WithSlot(t.Context())
	if _, ok := policy.DecisionFromContext(outer); ok {
		t.Fatal("an empty slot has a decision")
	}
	d := policy.Default().Decide(agent("bot", pki.RoleAgent), "nefia.mtls.init")
	inner := policy.WithDecision(context.WithValue(outer, struct{}{}, 1), d)
	for name, ctx := range map[string]context.Context{"outer": outer, "inner": inner} {
		if got, ok := policy.DecisionFromContext(ctx); !ok || got != d {
			t.Errorf("%s context: %+v, %v; want %+v", name, got, ok, d)
		}
	}
	// Without a slot the decision still reaches the code it is passed to.
	bare := policy.WithDecision(t.Context(), d)
	if got, ok := policy.DecisionFromContext(bare); !ok || got != d {
		t.Errorf("no slot: %+v, %v", got, ok)
	}
	// Separate slots never share a decision.
	other := policy.WithSlot(t.Context())
	if _, ok := policy.DecisionFromContext(other); ok {
		t.Error("a second slot sees the first one's decision")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { policy.WithDecision(outer, d); policy.DecisionFromContext(outer) })
	}
	wg.Wait()
}

// TestDecideAllowedNoAlloc (issue 16 item 3): an allowed call's decision
// (every status poll's) is made without formatting anything: its match text
// and reason were made with the policy. Before, 8 allocations per decision.
// The texts are those formatted the straightforward way. Not parallel:
// AllocsPerRun.
func TestDecideAllowedNoAlloc(t *testing.T) {
	custom, err := policy.New([]policy.Rule{{Role: pki.RoleAgent, Name: "bot-*", Allow: []string{"nefia.mtls.status", "up.*"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		p      *policy.Policy
		tool   string
		reason string
	}{
		{"default", policy.Default(), "nefia.mtls.status", `default[1] {role: agent} allows "nefia.mtls.status"`},
		{"custom", custom, "up.echo", `mcp.policy[0] {role: agent, name: "bot-*"} allows "up.*"`},
	} {
		a := agent("bot-1", pki.RoleAgent)
		d := tc.p.Decide(a, tc.tool)
		if !d.Allowed || d.Reason != tc.reason {
			t.Fatalf("%s: %+v, want allowed: %s", tc.name, d, tc.reason)
		}
		if n := testing.AllocsPerRun(100, func() { tc.p.Decide(a, tc.tool) }); n != 0 {
			t.Errorf("%s: %v allocations per allowed decision, want 0", tc.name, n)
		}
	}
}

// TestRecordDecisionNoAlloc (issue 16, second wave, item 2): recording a
// call's decision in its request's slot and reading it back for the audit
// record allocate nothing. Before, the slot pointed to a copy of the
// decision: one allocation per call. Not parallel: AllocsPerRun.
func TestRecordDecisionNoAlloc(t *testing.T) {
	ctx := policy.WithSlot(t.Context())
	d := policy.Default().Decide(agent("bot", pki.RoleAgent), "nefia.mtls.status")
	if n := testing.AllocsPerRun(100, func() {
		policy.WithDecision(ctx, d)
		if got, ok := policy.DecisionFromContext(ctx); !ok || got != d {
			t.Fatalf("read back %+v, %v; want %+v", got, ok, d)
		}
	}); n != 0 {
		t.Errorf("recording and reading a decision: %v allocations, want 0", n)
	}
}

// TestDecisionStringNoAlloc (issue 16, second wave, item 2): the audit
// record's decision text of an allowed call is made with the policy, not
// per call (1 allocation per audited call before), and is the text made
// the straightforward way, also when a copy's reason was changed since.
// Not parallel: AllocsPerRun.
func TestDecisionStringNoAlloc(t *testing.T) {
	d := policy.Default().Decide(agent("bot", pki.RoleAgent), "nefia.mtls.status")
	if want := "allowed: " + d.Reason; d.String() != want {
		t.Fatalf("String() = %q, want %q", d.String(), want)
	}
	if n := testing.AllocsPerRun(100, func() { _ = d.String() }); n != 0 {
		t.Errorf("String of an allowed decision: %v allocations, want 0", n)
	}
	changed := d
	changed.Reason = "something else"
	if got := changed.String(); got != "allowed: something else" {
		t.Errorf("String after the reason changed = %q", got)
	}
	denied := policy.Default().Decide(agent("bot", pki.RoleAgent), "nefia.mtls.init")
	if want := "denied: " + denied.Reason; denied.Allowed || denied.String() != want {
		t.Errorf("denied String() = %q, want %q", denied.String(), want)
	}
}
