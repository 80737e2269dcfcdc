package policy

import "github.com/nefia/nefia/pki"

// DefaultAgentTools are the tools the built-in policy grants agent
// certificates: read-only ones, named one by one. It is an explicit list,
// not a glob over nefia.mtls.* nor a reading of readOnlyHint annotations, so
// that a new (or mislabelled) state-changing tool is denied to agents
// instead of silently granted. nefia.mtls.renew is granted because it only
// ever renews the caller's own certificate, with no more authority (issue
// 13).
var DefaultAgentTools = []string{"nefia.mtls.status", "nefia.mtls.renew"}

// Default is the built-in policy, nefia's behaviour before mcp.policy
// existed: operators may call every tool, agents DefaultAgentTools. It
// applies when mcp.policy is absent or empty.
func Default() *Policy {
	return newPolicy([]Rule{
		{Role: pki.RoleOperator, Allow: []string{"*"}},
		{Role: pki.RoleAgent, Allow: append([]string(nil), DefaultAgentTools...)},
	}, SourceDefault)
}
