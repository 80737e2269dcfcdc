package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
)

// NameRenewServer replaces the server certificate under the existing CA
// (issue 13 item 3); operators only.
const NameRenewServer = "nefia.mtls.renew_server"

// RenewServerOutput is the structured result of nefia.mtls.renew_server.
type RenewServerOutput struct {
	Server         pki.CertInfo `json:"server" jsonschema:"the new server certificate; its SANs are the names clients may dial"`
	PreviousSerial string       `json:"previous_serial,omitempty" jsonschema:"serial of the replaced server certificate"`
}

func renewServerTool() mcp.Tool {
	return mcp.NewTool(NameRenewServer,
		mcp.WithToolTitle("Renew server certificate"),
		mcp.WithDescription("Replace this gateway's server certificate and key with new ones signed by the existing CA, "+
			"so clients keep trusting it: with the same names by default, or the given hosts. "+
			"The host of the configured listen address is always included. The running gateway picks the new certificate up "+
			"for new connections; live sessions continue. Operators only."),
		mcp.WithArray("hosts",
			mcp.Description("DNS names and IP addresses for the new certificate's SANs; omit to keep the current ones."),
			mcp.WithStringItems(mcp.MinLength(1), mcp.MaxLength(253)),
			mcp.MaxItems(maxHosts)),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[RenewServerOutput](),
		// Destructive: the previous server certificate and key are
		// replaced (not archived). Not idempotent: a new key every call.
		annotations("Renew server certificate", false, true, false),
	)
}

func (ts *toolset) handleRenewServer(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if _, known := identity.FromContext(ctx); !known {
		return refuse("permission denied: %s needs an authenticated caller, and this request has none", NameRenewServer), nil
	}
	var hosts []string
	if err := decodeArgs(req, map[string]arg{"hosts": stringListArg(&hosts)}); err != nil {
		return refuse("%v", err), nil
	}
	ctx, actor := ts.actor(ctx, NameRenewServer)
	res, err := ts.ops.RenewServer(ctx, actor, ops.RenewServerRequest{Hosts: hosts})
	switch {
	case errors.Is(err, ops.ErrOutcomeUnrecorded):
	case errors.Is(err, pki.ErrNoCA):
		return refuse("no CA has been initialized on this gateway; call %s first", NameInit), nil
	case err != nil:
		return ts.opFailed(NameRenewServer, "renewing the server certificate", err), nil
	}
	out := RenewServerOutput{Server: res.Server}
	if res.Previous != nil {
		out.PreviousSerial = res.Previous.Serial
	}
	text := fmt.Sprintf("New server certificate %s for %s, valid until %s. New connections get it; live sessions continue.",
		out.Server.Serial, strings.Join(out.Server.SANs, ", "), out.Server.NotAfter.Format(time.RFC3339))
	return success(out, text), nil
}
