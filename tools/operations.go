package tools

import (
	"context"
	"errors"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/policy"
)

// arguments names each ops input field as the tools spell it. The
// PKCS#12 fields are missing on purpose: a password is never a tool
// argument, so the PKCS#12 option is the CLI's only (nefia mtls
// issue-client --p12).
var arguments = map[string]string{
	ops.FieldHosts:    "hosts",
	ops.FieldForce:    "force",
	ops.FieldName:     "name",
	ops.FieldRole:     "role",
	ops.FieldDuration: "duration",
	ops.FieldCSR:      "csr_pem",
	ops.FieldOutDir:   "out_dir",
	ops.FieldSerial:   "serial",
	ops.FieldReason:   "reason",

	ops.FieldRevokePrevious: "revoke_previous",
}

// actor returns the caller an operation acts for, as the gateway
// authenticated it (the zero Agent, which has no authority, when the
// request carries none), and ctx with what the audit record says about the
// call: the tool and the authorization decision it was let through with.
func (ts *toolset) actor(ctx context.Context, tool string) (context.Context, identity.Agent) {
	a, _ := identity.FromContext(ctx)
	if a.SessionID == "" {
		if s := server.ClientSessionFromContext(ctx); s != nil {
			a.SessionID = s.SessionID()
		}
	}
	call := ops.Call{Tool: tool}
	// The decision enforced, not a new one; one for another tool means a
	// transport shared a decision slot, and is not recorded against this
	// call.
	if d, ok := policy.DecisionFromContext(ctx); ok && d.Tool == tool {
		call.Decision = d.String()
	}
	return ops.WithCall(ctx, call), a
}

// opFailed renders an operation's error that its handler did not render
// itself: bad input as `argument "x": ...`, a refusal as itself, anything
// else as a failure of doing, with host paths redacted throughout.
func (ts *toolset) opFailed(tool, doing string, err error) *mcp.CallToolResult {
	var in *ops.InputError
	switch {
	case errors.Is(err, ops.ErrUnaudited): // the operation has logged why
		return refuse("refused: the audit trail is unavailable, so nothing was changed; an operator must fix the gateway's audit directory")
	case errors.Is(err, ops.ErrPermission):
		return refuse("%s", ts.redact(err))
	case errors.As(err, &in):
		name, ok := arguments[in.Field]
		if !ok {
			name = in.Field
		}
		return refuse("argument %q: %s", name, ts.redact(in.Err))
	}
	return ts.fail(tool, doing, err)
}
