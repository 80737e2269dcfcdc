package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
)

// RevokeOutput is the structured result of nefia.mtls.revoke: the
// revocation record (the existing one when the serial was already revoked)
// and what happened to live sessions.
type RevokeOutput struct {
	Serial         string    `json:"serial" jsonschema:"canonical form: lowercase hex"`
	Name           string    `json:"name" jsonschema:"the revoked certificate's name"`
	RevokedAt      time.Time `json:"revoked_at" jsonschema:"RFC 3339; the original time when already_revoked"`
	Reason         string    `json:"reason,omitempty" jsonschema:"as recorded in the revocation store"`
	AlreadyRevoked bool      `json:"already_revoked" jsonschema:"true when the serial was revoked before this call; nothing was changed in the revocation store"`
	SessionsClosed int       `json:"sessions_closed" jsonschema:"live sessions of this certificate closed by this call; always 0 in stdio mode"`
	Warnings       []string  `json:"warnings,omitempty" jsonschema:"what did not stop the revocation but should be checked, such as a serial the inventory does not know"`
}

func revokeTool() mcp.Tool {
	return mcp.NewTool(NameRevoke,
		mcp.WithToolTitle("Revoke client certificate"),
		mcp.WithDescription("Revoke a client certificate by serial: new connections with it are refused at once and its live sessions on this gateway are closed. "+
			"Any well-formed serial is revoked, even one the inventory does not know (a warning says so). "+
			"Revoking an already revoked serial changes nothing and reports already_revoked=true. Revocation cannot be undone."),
		mcp.WithString("serial", mcp.Required(),
			mcp.Description("Serial of the certificate, as returned by nefia.mtls.issue_client: hexadecimal, any case, colons between octets allowed."),
			mcp.MinLength(1), mcp.MaxLength(64)),
		mcp.WithString("reason",
			mcp.Description("Why it is revoked; recorded in the revocation store."),
			mcp.MaxLength(pki.MaxReasonLen)),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[RevokeOutput](),
		annotations("Revoke client certificate", false, true, true),
	)
}

func (ts *toolset) handleRevoke(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	var serial, reason string
	if err := decodeArgs(req, map[string]arg{"serial": stringArg(&serial), "reason": stringArg(&reason)}); err != nil {
		return refuse("%v", err), nil
	}
	if strings.TrimSpace(serial) == "" {
		return refuse(`argument "serial" is required: the hexadecimal serial returned by %s`, NameIssueClient), nil
	}
	ctx, actor := ts.actor(ctx, NameRevoke)
	res, err := ts.ops.Revoke(ctx, actor, ops.RevokeRequest{Serial: serial, Reason: reason})
	if err != nil && !errors.Is(err, ops.ErrOutcomeUnrecorded) { // that one: done, and logged
		return ts.opFailed(NameRevoke, "revoking the certificate", err), nil
	}
	rev, already, closed := res.Revocation, res.AlreadyRevoked, res.SessionsClosed
	out := RevokeOutput{
		Serial:         rev.Serial,
		Name:           rev.Name,
		RevokedAt:      rev.RevokedAt,
		Reason:         rev.Reason,
		AlreadyRevoked: already,
		SessionsClosed: closed,
		Warnings:       ts.redactAll(res.Warnings),
	}
	verb := "Revoked"
	if already {
		verb = "Already revoked:"
	}
	name := out.Name
	if name == "" {
		name = "name unknown"
	}
	text := fmt.Sprintf("%s %s (%s) at %s; %d live session(s) closed.", verb, out.Serial, name, out.RevokedAt.Format(time.RFC3339), closed)
	if ts.sessions == nil {
		text += " (stdio mode: no gateway sessions here; a running gateway closes its own when it sees the revocation.)"
	}
	for _, w := range out.Warnings {
		text += "\nWarning: " + w
	}
	return success(out, text), nil
}
