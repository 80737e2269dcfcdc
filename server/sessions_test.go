package server_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// askControl sends one request on the gateway's control socket.
func askControl(t *testing.T, path string, req server.ControlRequest) server.ControlResponse {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("control socket: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		t.Fatal(err)
	}
	var resp server.ControlResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestGatewaySessionsAndDisconnect (issue 14 item 1): the control socket
// lists every live connection (a raw stream and an HTTP one here) with who,
// how, since when and how many calls; disconnect ends exactly the chosen
// one, without revoking it, and the close is audited.
func TestGatewaySessionsAndDisconnect(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), server.ControlSocketFile)
	g := servertest.Start(t, func(o *server.GatewayOptions) { o.ControlSocket = sock })

	botCert := g.Cert("bot", pki.RoleAgent)
	bot := g.Client(botCert)
	for range 2 {
		servertest.CallOK(t, bot, "nefia.mtls.status", nil)
	}
	hc := h2Client(t, g, g.Cert("ops", pki.RoleOperator))
	initialize(t, hc, "https://"+g.Addr+"/mcp")

	conns := askControl(t, sock, server.ControlRequest{Op: server.ControlSessions}).Connections
	if len(conns) != 2 {
		t.Fatalf("sessions: %+v, want the raw stream and the HTTP connection", conns)
	}
	byName := map[string]server.ConnInfo{}
	for _, c := range conns {
		byName[c.Name] = c
	}
	raw, web := byName["bot"], byName["ops"]
	if raw.Transport != identity.TransportStream || raw.Role != "agent" || raw.Calls != 2 || raw.ID == "" || raw.Serial == "" ||
		raw.RemoteAddr == "" || raw.Since.IsZero() || !raw.LastActivity.After(raw.Since) {
		t.Errorf("raw stream connection: %+v", raw)
	}
	if web.Transport != identity.TransportHTTP || web.Role != "operator" || web.Calls != 0 || web.ID == raw.ID {
		t.Errorf("HTTP connection: %+v", web)
	}

	resp := askControl(t, sock, server.ControlRequest{Op: server.ControlDisconnect, ID: raw.ID})
	if resp.Error != "" || resp.NotFound || len(resp.Connections) != 1 || resp.Connections[0].ID != raw.ID {
		t.Fatalf("disconnect %s: %+v", raw.ID, resp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bot.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "nefia.mtls.status"}}); err == nil {
		t.Error("the disconnected raw session still answers")
	}
	// The closed connection leaves the table when its goroutine has
	// finished, a moment after the client sees the close.
	waitFor(t, func() bool { // the HTTP connection alone is left
		left := askControl(t, sock, server.ControlRequest{Op: server.ControlSessions}).Connections
		return len(left) == 1 && left[0].ID == web.ID
	})
	if got := askControl(t, sock, server.ControlRequest{Op: server.ControlDisconnect, ID: "c-nosuch"}); !got.NotFound {
		t.Errorf("disconnect of an unknown id: %+v, want not_found", got)
	}
	// Not revoked: the same certificate gets in again.
	if err := g.Probe(g.ClientConfig(&botCert)); err != nil {
		t.Errorf("the disconnected certificate cannot connect again: %v", err)
	}

	var audited, byOperator bool
	deadline := time.Now().Add(10 * time.Second)
	for !(audited && byOperator) && time.Now().Before(deadline) {
		for _, r := range g.AuditRecords() {
			if r.Event == audit.EventConnectionClose && r.Reason == server.ReasonCloseDisconnected && r.Agent != nil && r.Agent.Name == "bot" {
				audited = true
			}
			if r.Event == audit.EventDisconnect && r.Args["id"] == raw.ID {
				byOperator = r.Agent != nil && r.Agent.Role == "operator" && r.Outcome == audit.OutcomeOK
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !audited {
		t.Error("no connection_close record with reason \"disconnected by an operator\"")
	}
	if !byOperator {
		t.Error("no gateway.disconnect record by the local operator")
	}
}
