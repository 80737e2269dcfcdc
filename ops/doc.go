// Package ops is nefia's one implementation of every certificate operation:
// Init, Issue and Revoke. The CLI (cmd/nefia) and the MCP tools (tools)
// only parse their input and render the result; whatever an operation
// checks, records and changes is done here, once, so the two can no longer
// drift apart (issue 11 item 1).
//
// Every state-changing operation runs the same steps in the same order:
//
//  1. validate: every argument, the actor's authority (nobody issues a role
//     with more authority than their own, pki.Role.Allows) and the
//     destination, so bad input changes nothing and records nothing
//     durable (the MCP server's tool_call record still notes the call);
//  2. audit begin: the durable state event (mtls.init, mtls.issue_client,
//     mtls.revoke) with the actor's identity; if it cannot be written the
//     operation is refused ("no audit, no action", ErrUnaudited);
//  3. pki: the change itself;
//  4. config: Init sets mcp.mtls.enabled=true inside the audited action,
//     so the ending record says whether it happened;
//  5. audit outcome: the ending record (result, or error);
//  6. sessions: Revoke closes the serial's live sessions through
//     Service.Sessions when there is one (the gateway); the CLI has none,
//     and a running gateway's revocation poll closes them instead.
//
// Errors carry what an edge needs to render them: *InputError names the
// field ("duration", "out_dir", ...) so the CLI prints "--duration: ..."
// (exit 2) and the tool "argument \"duration\": ..." from one check, with
// the pki sentinels kept for errors.Is; *UnwrittenError is an issued
// certificate whose files could not be written (it is revoked); ErrUnaudited,
// ErrPermission and ErrNotEnabled are matched with errors.Is.
// ErrOutcomeUnrecorded comes with a complete result: the change was made
// (its started record covers it), only its ending record failed; the tools
// report it done, as the server's audit guard used to, the CLI fails as it
// always has.
//
// The audit records are the same whichever edge called: the args are the
// normalized request (defaults applied, a CSR as its SHA-256), the result is
// what the operation did. The tool path adds the tool name and the policy
// decision (WithCall), and the actor's session, address and transport.
//
// What stays at the edges: reading files named by flags (the CLI's --csr
// and --p12-password-file), confining a model's out_dir to the clients
// directory (tools), redacting host paths from text sent to a remote caller
// (tools), and the read-only status report (tools.BuildStatus, already
// shared by both).
package ops
