package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
)

// Names of the gateway's own operator tools (issue 14 item 1). They act on
// the live connection table, which only the gateway has, so the gateway
// registers them rather than package tools.
const (
	ToolSessions   = "nefia.gateway.sessions"
	ToolDisconnect = "nefia.gateway.disconnect"
)

// SessionsOutput is the structured result of nefia.gateway.sessions.
type SessionsOutput struct {
	Connections []ConnInfo `json:"connections" jsonschema:"live connections, oldest first"`
}

// DisconnectOutput is the structured result of nefia.gateway.disconnect.
type DisconnectOutput struct {
	Closed []ConnInfo `json:"closed" jsonschema:"the connections that were ended"`
}

func sessionsTool() mcp.Tool {
	return mcp.NewTool(ToolSessions,
		mcp.WithToolTitle("Live gateway connections"),
		mcp.WithDescription("List the connections to this gateway now: connection id, certificate name, serial and role, transport, "+
			"remote address, since when, last activity and calls so far. Operators only. Changes nothing."),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[SessionsOutput](),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
	)
}

func disconnectTool() mcp.Tool {
	return mcp.NewTool(ToolDisconnect,
		mcp.WithToolTitle("Disconnect gateway connections"),
		mcp.WithDescription("End live connections without revoking anything: the one with this connection id (from "+
			ToolSessions+"), or every connection of a certificate serial. The client may connect again; revoke the "+
			"certificate to keep it out. Operators only."),
		mcp.WithString("id", mcp.Description("A connection id from "+ToolSessions+"."), mcp.MaxLength(64)),
		mcp.WithString("serial", mcp.Description("A certificate serial: hexadecimal, any case, colons allowed."), mcp.MaxLength(64)),
		mcp.WithSchemaAdditionalProperties(false),
		mcp.WithOutputSchema[DisconnectOutput](),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(false),
		mcp.WithOpenWorldHintAnnotation(false),
	)
}

// addGatewayTools registers the operator tools on the gateway's server.
func (g *Gateway) addGatewayTools(srv *mcpserver.MCPServer) {
	srv.AddTool(sessionsTool(), g.handleSessions)
	srv.AddTool(disconnectTool(), g.handleDisconnect)
}

// operatorOnly refuses a caller that is not an operator, whatever a policy
// lets it list: connection details name every agent and where it is.
func operatorOnly(ctx context.Context, tool string) (identity.Agent, *mcp.CallToolResult) {
	a, ok := identity.FromContext(ctx)
	if !ok || a.Role != pki.RoleOperator {
		return a, mcp.NewToolResultError(tool + " is for operators only")
	}
	return a, nil
}

func (g *Gateway) handleSessions(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	if _, denied := operatorOnly(ctx, ToolSessions); denied != nil {
		return denied, nil
	}
	out := SessionsOutput{Connections: g.Connections()}
	if out.Connections == nil {
		out.Connections = []ConnInfo{}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d live connection(s)\n", len(out.Connections))
	for _, c := range out.Connections {
		fmt.Fprintf(&b, "%s %s (%s, serial %s) %s from %s since %s, %d calls\n", c.ID, c.Name, c.Role, c.Serial,
			c.Transport, c.RemoteAddr, c.Since.UTC().Format(time.RFC3339), c.Calls)
	}
	return mcp.NewToolResultStructured(out, b.String()), nil
}

func (g *Gateway) handleDisconnect(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	actor, denied := operatorOnly(ctx, ToolDisconnect)
	if denied != nil {
		return denied, nil
	}
	id, serial := req.GetString("id", ""), req.GetString("serial", "")
	if (id == "") == (serial == "") {
		return mcp.NewToolResultError(`give exactly one of "id" (from ` + ToolSessions + `) and "serial"`), nil
	}
	if serial != "" {
		canon, err := pki.ParseSerial(serial)
		if err != nil {
			return mcp.NewToolResultError(`argument "serial": ` + err.Error()), nil
		}
		serial = canon
	}
	closed, err := g.Disconnect(id, serial)
	g.auditDisconnectBy(actor, ControlRequest{Op: ControlDisconnect, ID: id, Serial: serial}, closed, err)
	if errors.Is(err, ErrNoSuchConnection) {
		return mcp.NewToolResultError("no live connection matches; see " + ToolSessions), nil
	}
	if err != nil {
		return nil, err
	}
	return mcp.NewToolResultStructured(DisconnectOutput{Closed: closed}, fmt.Sprintf("%d connection(s) ended; not revoked", len(closed))), nil
}
