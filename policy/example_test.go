package policy_test

import (
	"fmt"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/policy"
)

// A policy from mcp.policy: agents read files, CI certificates also use
// the tickets upstream, operators everything.
func ExamplePolicy_Decide() {
	p, err := policy.New([]policy.Rule{
		{Role: pki.RoleAgent, Allow: []string{"nefia.mtls.status", "fs.read_*"}},
		{Name: "ci-*", Allow: []string{"tickets.*"}},
		{Role: pki.RoleOperator, Allow: []string{"*"}},
	})
	if err != nil {
		panic(err)
	}
	ci := identity.Agent{Name: "ci-build", Role: pki.RoleAgent}
	for _, tool := range []string{"fs.read_file", "tickets.create", "nefia.mtls.revoke"} {
		fmt.Println(p.Decide(ci, tool))
	}
	// Output:
	// allowed: mcp.policy[0] {role: agent} allows "fs.read_*"
	// allowed: mcp.policy[1] {name: "ci-*"} allows "tickets.*"
	// denied: no rule of mcp.policy matching name "ci-build" with role agent allows nefia.mtls.revoke
}

// The built-in default, used when mcp.policy is absent or empty.
func ExampleDefault() {
	p := policy.Default()
	tools := []string{"nefia.mtls.init", "nefia.mtls.issue_client", "nefia.mtls.status", "nefia.mtls.revoke"}
	for _, a := range []identity.Agent{
		{Name: "root", Role: pki.RoleOperator},
		{Name: "bot", Role: pki.RoleAgent},
		{Name: "x", Role: "unknown"},
	} {
		fmt.Printf("%s: %v\n", a.Role, p.Allowed(a, tools))
	}
	// Output:
	// operator: [nefia.mtls.init nefia.mtls.issue_client nefia.mtls.status nefia.mtls.revoke]
	// agent: [nefia.mtls.status]
	// unknown: []
}
