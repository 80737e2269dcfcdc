// Package policy is nefia's authorization: a value that maps the identity
// of a caller to the MCP tools it may list and call (and the resources and
// prompts of upstreams), evaluated once per request.
//
// # Rules
//
// A Policy is an ordered list of rules, written in nefia.yaml under
// mcp.policy:
//
//	mcp:
//	  policy:
//	    - match: {role: agent}
//	      allow: [nefia.mtls.status, "fs.read_*", "fs.list_*"]
//	    - match: {name: "ci-*"}
//	      allow: ["tickets.*"]
//	    - match: {role: operator}
//	      allow: ["*"]
//
// A rule matches a caller when every match field it gives matches: role
// exactly (agent or operator, the role in the caller's certificate), name as
// a glob against the certificate name (its CN). A rule must give at least
// one match field and at least one allow pattern. The tools a caller may use
// are the union of the allow patterns of every rule that matches it; the
// first such rule (in file order) whose pattern matches the tool is the one a
// Decision names.
//
// # Globs
//
// Patterns use path.Match syntax: * matches any run of characters, ?
// exactly one, [a-z] a class, \ escapes. path.Match gives '.' no special
// meaning, so "fs.read_*" matches fs.read_file and "tickets.*" every tool of
// the tickets upstream; "*" matches every tool. Unlike path.Match, * also
// crosses '/' in what a rule allows, so that globs match resource URIs
// whole; tool names never contain '/'. Upstream prompts and resources are
// decided as <upstream>.prompt:<name> and <upstream>.resource:<uri> (see
// PromptSubject, ResourceSubject) and matched by parts: exactly "*" and
// "fs.*" cover them, as does a pattern naming the kind
// ("fs.resource:file:///srv/*", "*.prompt:review"); a tool glob like
// "fs.read_*" or "*_public" does not, whatever name or URI follows. A
// resource URI with dot segments, encoded separators or control
// characters is denied before any rule is looked at (CheckURI).
// A pattern path.Match calls malformed ("[a", a trailing \) is rejected
// when the policy is built, never silently matching nothing. In YAML, quote
// a pattern that starts with * ("*", "*.read"): unquoted, YAML reads it as
// an alias.
//
// # Failing closed
//
// A caller without identity, one whose role is empty or not a nefia role,
// an empty tool name, a caller no rule matches, and a tool none of its
// matching rules allows are all denied, with a Reason saying which. The
// zero Policy and a nil *Policy allow nothing.
//
// # The default
//
// With no rules (mcp.policy absent or an empty list) the built-in Default
// applies, which is nefia's behaviour before policies existed: an operator
// may call every tool, an agent only nefia.mtls.status. A configured policy
// replaces the default entirely: to keep operators' access, say so with a
// {role: operator} rule, as above. `nefia policy check` explains any
// decision.
//
// # What the policy does not decide
//
// The policy decides which tools a caller may call, not what a tool does
// with its arguments. Privilege rules inside the tools stay in force
// whatever the policy says: nobody issues a certificate with more authority
// than their own (pki.Role.Allows), so an agent allowed
// nefia.mtls.issue_client can still only issue agent certificates.
//
// # One decision per request
//
// The server decides once per tool call and records the Decision in the
// request's context (WithDecision); the audit trail reads it back
// (DecisionFromContext) instead of deciding again, so what is recorded is
// exactly what was enforced, even if the policy was swapped meanwhile.
package policy
