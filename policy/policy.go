package policy

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// Sources a Decision can come from.
const (
	// SourceConfig is a policy built from mcp.policy in nefia.yaml; rule
	// indexes are positions in that list, from 0.
	SourceConfig = "mcp.policy"
	// SourceDefault is the built-in policy used when mcp.policy is absent
	// or empty.
	SourceDefault = "default"
)

// ErrInvalid marks a rule that cannot be part of a policy; the message names
// the rule and the field.
var ErrInvalid = errors.New("policy: invalid rule")

// Rule grants the callers it matches the tools its Allow patterns match.
type Rule struct {
	// Role, if set, must equal the caller's role (agent or operator).
	Role pki.Role
	// Name, if set, is a glob the caller's certificate name must match.
	Name string
	// Allow are tool name globs; at least one.
	Allow []string
}

// String describes the rule's match the way nefia.yaml writes it.
func (r Rule) String() string {
	var parts []string
	if r.Role != "" {
		parts = append(parts, "role: "+string(r.Role))
	}
	if r.Name != "" {
		parts = append(parts, fmt.Sprintf("name: %q", r.Name))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// matches reports whether every match field the rule gives matches a.
// Patterns were validated by New, so path.Match cannot fail here.
func (r Rule) matches(a identity.Agent) bool {
	if r.Role != "" && r.Role != a.Role {
		return false
	}
	if r.Name != "" {
		if ok, _ := path.Match(r.Name, a.Name); !ok {
			return false
		}
	}
	return true
}

// Policy is an immutable, validated list of rules. Share it freely; swap it
// as a whole (the server holds it behind an atomic pointer) to change it.
type Policy struct {
	rules  []Rule
	source string
	// Per rule, what an allowing Decision says of it: its match as
	// nefia.yaml writes it and, per allow glob, the reason. They are fixed
	// by the rules, so they are made once (newPolicy), not per call: agents
	// poll status (issue 16 item 3). Each reason is held as the
	// decision's String ("allowed: " and the reason); Reason is its tail.
	matchText []string
	reasons   [][]string
}

// newPolicy returns the policy of rules (owned by it from now on) from
// source.
func newPolicy(rules []Rule, source string) *Policy {
	p := &Policy{rules: rules, source: source, matchText: make([]string, len(rules)), reasons: make([][]string, len(rules))}
	for i, r := range rules {
		p.matchText[i] = r.String()
		p.reasons[i] = make([]string, len(r.Allow))
		for j, pat := range r.Allow {
			p.reasons[i][j] = allowedPrefix + fmt.Sprintf("%s[%d] %s allows %q", source, i, p.matchText[i], pat)
		}
	}
	return p
}

// New builds a policy from rules, which come from mcp.policy. No rules
// means Default: an absent or empty mcp.policy keeps nefia's built-in
// behaviour. Every rule must give a valid role or a valid name glob (or
// both) and at least one valid allow glob; a malformed glob is an error,
// not a pattern that silently matches nothing. The errors (one per problem,
// joined) wrap ErrInvalid and name the rule by its index.
func New(rules []Rule) (*Policy, error) {
	if len(rules) == 0 {
		return Default(), nil
	}
	var errs []error
	own := make([]Rule, len(rules))
	for i, r := range rules {
		errs = append(errs, checkRule(fmt.Sprintf("%s[%d]", SourceConfig, i), r)...)
		own[i] = Rule{Role: r.Role, Name: r.Name, Allow: append([]string(nil), r.Allow...)}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return newPolicy(own, SourceConfig), nil
}

func checkRule(at string, r Rule) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, at, fmt.Sprintf(format, args...)))
	}
	if r.Role == "" && r.Name == "" {
		bad("match needs a role or a name; a rule matching every caller must say role: operator or role: agent")
	}
	if r.Role != "" && r.Role != pki.RoleAgent && r.Role != pki.RoleOperator {
		bad("match.role must be %s or %s, got %q", pki.RoleAgent, pki.RoleOperator, r.Role)
	}
	if r.Name != "" {
		if _, err := path.Match(r.Name, ""); err != nil {
			bad("match.name %q is not a valid glob: %v", r.Name, err)
		}
	}
	if len(r.Allow) == 0 {
		bad("allow needs at least one tool name or glob")
	}
	for j, p := range r.Allow {
		if p == "" {
			bad("allow[%d] is empty", j)
		} else if _, err := path.Match(p, ""); err != nil {
			bad("allow[%d] %q is not a valid glob: %v", j, p, err)
		}
	}
	return errs
}

// Rules returns a copy of the policy's rules, in order.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	out := make([]Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = Rule{Role: r.Role, Name: r.Name, Allow: append([]string(nil), r.Allow...)}
	}
	return out
}

// Source is SourceConfig or SourceDefault.
func (p *Policy) Source() string {
	if p == nil {
		return ""
	}
	return p.source
}

// Decision is the outcome of one authorization question, complete enough to
// enforce, to explain to the caller and to record in the audit trail.
type Decision struct {
	// Allowed is the verdict.
	Allowed bool `json:"allowed"`
	// Tool is what was asked for.
	Tool string `json:"tool"`
	// Source is the policy that decided: SourceConfig or SourceDefault.
	Source string `json:"source,omitempty"`
	// Rule is the index (in Source) of the rule that allowed the call;
	// -1 when denied.
	Rule int `json:"rule"`
	// Match is that rule's match, as nefia.yaml writes it.
	Match string `json:"match,omitempty"`
	// Pattern is that rule's allow glob that matched the tool.
	Pattern string `json:"pattern,omitempty"`
	// Reason says, in one lowercase phrase, why the call is allowed or not.
	Reason string `json:"reason"`
	// text is String of an allowed decision, made with the policy: the
	// audit trail records it for every call (issue 16, second wave: one
	// allocation per call before). "" for the others.
	text string
}

// allowedPrefix begins String of an allowed decision.
const allowedPrefix = "allowed: "

// String is the decision in one line, as the audit trail records it.
func (d Decision) String() string {
	if d.Allowed && len(d.text) > len(allowedPrefix) && d.text[len(allowedPrefix):] == d.Reason {
		return d.text // the same bytes: a Reason changed since is never shadowed
	}
	if d.Allowed {
		return allowedPrefix + d.Reason
	}
	return "denied: " + d.Reason
}

// Decide answers whether agent may call tool. It fails closed: a nil policy,
// a caller without identity or without a nefia role, an empty tool name, a
// caller no rule matches and a tool no matching rule allows are all denied.
// Whether the tool exists is the server's business: a policy allowing "*"
// allows a name the server then reports as unknown.
func (p *Policy) Decide(agent identity.Agent, tool string) Decision {
	d := Decision{Tool: tool, Rule: -1}
	if p == nil || len(p.rules) == 0 {
		d.Reason = "no authorization policy is in force"
		return d
	}
	d.Source = p.source
	switch {
	case agent.Name == "" && agent.Role == "":
		d.Reason = "the request carries no authenticated identity"
		return d
	case agent.Role != pki.RoleAgent && agent.Role != pki.RoleOperator:
		d.Reason = fmt.Sprintf("caller %q carries no nefia role (got %q)", agent.Name, agent.Role)
		return d
	case tool == "":
		d.Reason = "no tool name was given"
		return d
	}
	if err := checkSubject(tool); err != nil {
		d.Reason = "refused: " + err.Error()
		return d
	}
	matched := false
	for i, r := range p.rules {
		if !r.matches(agent) {
			continue
		}
		matched = true
		for j, pat := range r.Allow {
			if match(pat, tool) {
				d.Allowed, d.Rule, d.Match, d.Pattern = true, i, p.matchText[i], pat
				d.text = p.reasons[i][j]
				d.Reason = d.text[len(allowedPrefix):]
				return d
			}
		}
	}
	who := fmt.Sprintf("name %q with role %s", agent.Name, agent.Role)
	of := p.source
	if of == SourceDefault {
		of = "the built-in default policy"
	}
	if !matched {
		d.Reason = fmt.Sprintf("no rule of %s matches %s", of, who)
	} else {
		d.Reason = fmt.Sprintf("no rule of %s matching %s allows %s", of, who, tool)
	}
	return d
}

// Allowed returns the names among tools that agent may call, in their
// order: what tools/list shows it and what a denial tells it it may use.
func (p *Policy) Allowed(agent identity.Agent, tools []string) []string {
	var out []string
	for _, t := range tools {
		if p.Decide(agent, t).Allowed {
			out = append(out, t)
		}
	}
	return out
}
