package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
)

// toolCalls returns the tool_call records written since index from.
func toolCalls(recs []audit.Record, from int) []audit.Record {
	var out []audit.Record
	for _, r := range recs[from:] {
		if r.Event == audit.EventToolCall {
			out = append(out, r)
		}
	}
	return out
}

func TestEveryToolCallIsAuditedOnce(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	opCert := gw.Cert("ops", pki.RoleOperator)
	agCert := gw.Cert("bot", pki.RoleAgent)
	op, ag := gw.Client(opCert), gw.Client(agCert)
	victim := gw.Issue("victim", pki.RoleAgent, time.Hour)

	tests := []struct {
		name    string
		client  func() any
		tool    string
		args    map[string]any
		cn      string
		serial  string
		outcome string
	}{
		{"ok", nil, "nefia.mtls.status", nil, "ops", pki.FormatSerial(opCert.Leaf.SerialNumber), audit.OutcomeOK},
		{"tool error", nil, "nefia.mtls.issue_client", map[string]any{"name": "../x"}, "ops", pki.FormatSerial(opCert.Leaf.SerialNumber), audit.OutcomeError},
		{"denied", nil, "nefia.mtls.revoke", map[string]any{"serial": victim.Serial}, "bot", pki.FormatSerial(agCert.Leaf.SerialNumber), audit.OutcomeDenied},
		{"unknown tool", nil, "nefia.mtls.nope", nil, "ops", pki.FormatSerial(opCert.Leaf.SerialNumber), audit.OutcomeError},
		{"state change", nil, "nefia.mtls.revoke", map[string]any{"serial": victim.Serial, "reason": "audit test"}, "ops", pki.FormatSerial(opCert.Leaf.SerialNumber), audit.OutcomeOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := op
			if tt.cn == "bot" {
				c = ag
			}
			before := len(gw.AuditRecords())
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			req := mcp.CallToolRequest{}
			req.Params.Name, req.Params.Arguments = tt.tool, tt.args
			_, _ = c.CallTool(ctx, req) // unknown tools are protocol errors; the rest results
			calls := toolCalls(gw.AuditRecords(), before)
			if len(calls) != 1 {
				t.Fatalf("%d tool_call records, want exactly 1: %+v", len(calls), calls)
			}
			r := calls[0]
			if r.Tool != tt.tool || r.Outcome != tt.outcome || r.Agent == nil || r.Agent.Name != tt.cn || r.Agent.Serial != tt.serial {
				t.Errorf("record = tool %q outcome %q agent %+v; want %q %q %s/%s", r.Tool, r.Outcome, r.Agent, tt.tool, tt.outcome, tt.cn, tt.serial)
			}
			if r.SessionID == "" || r.RemoteAddr == "" || r.Transport != "mtls-stream" {
				t.Errorf("record lacks session, address or transport: %+v", r)
			}
		})
	}
	// The state change also left its started/ok event pair, with the serial.
	var events []audit.Record
	for _, r := range gw.AuditRecords() {
		if r.Event == audit.EventRevoke {
			events = append(events, r)
		}
	}
	if len(events) != 2 || events[0].Outcome != audit.OutcomeStarted || events[1].Outcome != audit.OutcomeOK || events[1].Result["serial"] != victim.Serial {
		t.Errorf("revoke events = %+v", events)
	}
	gw.VerifyAudit()
}

func TestConcurrentSessionsKeepTheChain(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	var wg sync.WaitGroup
	for i := range 20 {
		cert := gw.Cert(fmt.Sprintf("c%02d", i), pki.RoleOperator)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := gw.Client(cert)
			for range 5 {
				servertest.CallTool(t, c, "nefia.mtls.status", nil)
			}
			servertest.CallTool(t, c, "nefia.mtls.issue_client", map[string]any{"name": fmt.Sprintf("issued-%02d", i)})
		}()
	}
	wg.Wait()
	n := gw.VerifyAudit()
	if calls := toolCalls(gw.AuditRecords(), 0); len(calls) != 20*6 {
		t.Errorf("%d tool_call records, want %d", len(calls), 20*6)
	}
	if n < 20*6 {
		t.Errorf("trail holds %d records", n)
	}
}

func TestNoAuditNoAction(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	before, _ := gw.Store.List()

	// Root ignores file modes, so take the trail's path away instead.
	gw.BreakAudit()
	res := servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "unaudited"})
	if !res.IsError || !strings.Contains(res.Content[0].(mcp.TextContent).Text, "audit trail is unavailable") {
		t.Fatalf("issue_client without an audit trail: %+v", res.Content)
	}
	after, _ := gw.Store.List()
	if len(after) != len(before) {
		t.Fatal("a certificate was issued without an audit record")
	}
	if _, err := os.Stat(filepath.Join(gw.Store.Dir(), "clients", "unaudited.key")); !os.IsNotExist(err) {
		t.Errorf("key file written without audit: %v", err)
	}
	// Read-only calls still answer.
	if res := servertest.CallTool(t, op, "nefia.mtls.status", nil); res.IsError {
		t.Errorf("status failed: %v", res.Content)
	}
}

func TestAuditHoldsNoSecrets(t *testing.T) {
	gw := servertest.Start(t)
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	csr, _ := pkitest.CSR(t, pkixName("csr-client"))
	servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "keyed"})
	servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "csr-client", "csr_pem": string(csr)})
	gw.AuditRecords() // flushes the batch
	data, err := os.ReadFile(filepath.Join(gw.AuditDir, audit.TrailFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"PRIVATE KEY", "BEGIN", "MII"} {
		if strings.Contains(string(data), bad) {
			t.Errorf("audit trail contains %q", bad)
		}
	}
	if !strings.Contains(string(data), `"csr_pem":"sha256:`) {
		t.Error("CSR not recorded as its SHA-256")
	}
}
