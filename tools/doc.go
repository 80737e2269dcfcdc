// Package tools declares nefia's MCP tools (nefia.mtls.*): their names,
// descriptions, input and output schemas and annotations, and handlers that
// translate between MCP arguments and the operation layer (package ops),
// which the CLI calls too: a handler decodes and checks the arguments'
// shapes, confines out_dir to the clients directory, calls the operation
// with the caller's identity and renders its result or error, redacted.
// The validation, the privilege rule, the audit record (no audit, no
// action) and the change itself are the operation's. It also holds the
// status report the CLI and the tools share, so both say the same thing.
//
// Register adds nefia.mtls.init, nefia.mtls.issue_client, nefia.mtls.status
// and nefia.mtls.revoke to an mcp-go server; which callers may list and
// call them is the server's authorization policy (package policy), not the
// tools' business. The tools keep these invariants whatever the caller sends
// and whatever the policy allows:
//
//   - A result never contains a private key. issue_client writes a generated
//     key to the gateway host and returns its path, or signs a CSR so the
//     key never leaves the caller.
//   - issue_client writes only inside Deps.ClientsDir, checked after
//     cleaning the path and resolving symbolic links, and never issues a
//     certificate with more authority than its caller's (a request without
//     an identity has none).
//   - Every refusal happens before anything changes: a refused issue_client
//     records no certificate, a refused init keeps the existing CA.
//   - Problems are tool results with IsError set, never protocol errors, and
//     their text names files by base name only, never the absolute paths of
//     the CA or the state directory.
//
// The JSON definition of each tool is snapshotted in testdata/toolsnaps at
// the repository root; `go test ./tools -update` rewrites the snapshots after
// an intended change.
package tools
