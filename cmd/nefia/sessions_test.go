package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// TestSessionsAndDisconnectCLI (issue 14 item 1): 'nefia mtls sessions'
// lists a running gateway's live connections through the control socket,
// 'nefia mtls disconnect --serial' ends exactly that certificate's, and
// with no gateway running both say so (exit 1).
func TestSessionsAndDisconnectCLI(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.mustRun("mtls", "init", "--hosts", "127.0.0.1")
	botSerial := c.issueJSON("--name", "bot")
	c.issueJSON("--name", "ops", "--role", "operator")

	_, errOut, code := c.run("mtls", "sessions")
	if code != 1 || !strings.Contains(errOut, "no gateway is running") {
		t.Fatalf("sessions without a gateway: exit %d, %q; want 1 and 'no gateway is running'", code, errOut)
	}

	addr := startGatewayBin(t, c)
	bot, ops := rawClient(t, c, addr, "bot"), rawClient(t, c, addr, "ops")
	servertest.CallOK(t, bot, "nefia.mtls.status", nil)

	var conns []server.ConnInfo
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "sessions", "--json")), &conns); err != nil || len(conns) != 2 {
		t.Fatalf("sessions --json: %+v, %v; want bot and ops", conns, err)
	}
	if table := c.mustRun("mtls", "sessions"); !strings.Contains(table, "bot") || !strings.Contains(table, "mtls-stream") {
		t.Errorf("sessions table:\n%s", table)
	}

	_, errOut, code = c.run("mtls", "disconnect", "--serial", "zz")
	if code != 2 || !strings.Contains(errOut, "--serial") {
		t.Errorf("disconnect --serial zz: exit %d, %q; want 2 naming --serial", code, errOut)
	}
	_, errOut, code = c.run("mtls", "disconnect")
	if code != 2 || !strings.Contains(errOut, "--session") {
		t.Errorf("disconnect without a selector: exit %d, %q; want 2", code, errOut)
	}
	out := c.mustRun("mtls", "disconnect", "--serial", strings.ToUpper(botSerial))
	if !strings.Contains(out, "Disconnected") || !strings.Contains(out, "bot") {
		t.Errorf("disconnect: %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bot.CallTool(ctx, mcp.CallToolRequest{Params: mcp.CallToolParams{Name: "nefia.mtls.status"}}); err == nil {
		t.Error("bot's session still answers after disconnect")
	}
	servertest.CallOK(t, ops, "nefia.mtls.status", nil) // the other one is untouched
	if err := json.Unmarshal([]byte(c.mustRun("mtls", "sessions", "--json")), &conns); err != nil || len(conns) != 1 || conns[0].Name != "ops" || conns[0].Calls != 1 {
		t.Errorf("after disconnect: %+v, %v; want ops alone, 1 call", conns, err)
	}
	_, errOut, code = c.run("mtls", "disconnect", "--serial", botSerial)
	if code != 1 || !strings.Contains(errOut, "no live connection") {
		t.Errorf("second disconnect: exit %d, %q; want 1", code, errOut)
	}
	if st := c.states(); st[botSerial] != "active" {
		t.Errorf("disconnect revoked the certificate: %v", st)
	}
}
