package server_test

import (
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// TestGatewaySessionTools (issue 14 item 1): nefia.gateway.sessions lists
// the live connections to operators only, even when a policy lets agents
// call everything; nefia.gateway.disconnect ends exactly the chosen ones,
// by id or serial, audits it, and revokes nothing.
func TestGatewaySessionTools(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t, withPolicy(mustPolicy(t,
		policy.Rule{Role: pki.RoleAgent, Allow: []string{"*"}},
		policy.Rule{Role: pki.RoleOperator, Allow: []string{"*"}},
	)))
	botIss := gw.Issue("bot", pki.RoleAgent, time.Hour)
	botCert := pkitest.KeyPair(t, botIss)
	bot, other := gw.Client(botCert), gw.Client(gw.Cert("other", pki.RoleAgent))
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	servertest.CallOK(t, bot, "nefia.mtls.status", nil)
	servertest.CallOK(t, other, "nefia.mtls.status", nil)

	for _, name := range []string{server.ToolSessions, server.ToolDisconnect} {
		if res := servertest.CallTool(t, bot, name, map[string]any{"id": "c-x"}); !res.IsError {
			t.Errorf("an agent called %s: %+v", name, res.StructuredContent)
		}
	}

	listed := servertest.CallOK(t, op, server.ToolSessions, nil)
	conns, _ := listed["connections"].([]any)
	ids := map[string]string{} // name -> connection id
	for _, c := range conns {
		m := c.(map[string]any)
		ids[m["name"].(string)] = m["id"].(string)
		if sid, _ := m["session_id"].(string); sid == "" {
			t.Errorf("raw connection %v lists no MCP session id", m)
		}
	}
	if len(conns) != 3 || ids["bot"] == "" || ids["other"] == "" || ids["ops"] == "" {
		t.Fatalf("sessions = %v, want bot, other and ops", conns)
	}

	for _, tt := range []struct {
		name string
		args map[string]any
	}{
		{"neither id nor serial", nil},
		{"both", map[string]any{"id": ids["bot"], "serial": "01"}},
		{"bad serial", map[string]any{"serial": "xyz"}},
		{"no such id", map[string]any{"id": "c-nothere"}},
	} {
		if res := servertest.CallTool(t, op, server.ToolDisconnect, tt.args); !res.IsError {
			t.Errorf("%s: disconnect succeeded: %+v", tt.name, res.StructuredContent)
		}
	}

	done := servertest.CallOK(t, op, server.ToolDisconnect, map[string]any{"serial": botIss.Serial})
	if closed, _ := done["closed"].([]any); len(closed) != 1 || closed[0].(map[string]any)["id"] != ids["bot"] {
		t.Errorf("disconnect closed %v, want only bot's %s", done["closed"], ids["bot"])
	}
	after := servertest.CallOK(t, op, server.ToolSessions, nil)
	if conns, _ := after["connections"].([]any); len(conns) != 2 {
		t.Errorf("after disconnect: %v, want other and ops", conns)
	}
	servertest.CallOK(t, other, "nefia.mtls.status", nil) // untouched
	// Not revoked: the certificate gets in again.
	servertest.CallOK(t, gw.Client(botCert), "nefia.mtls.status", nil)

	var disconnects int
	for _, r := range gw.AuditRecords() {
		if r.Event == audit.EventDisconnect && r.Outcome == audit.OutcomeOK && r.Agent != nil && r.Agent.Name == "ops" {
			disconnects++
		}
	}
	if disconnects != 1 {
		t.Errorf("%d %s records by ops, want 1", disconnects, audit.EventDisconnect)
	}
}
