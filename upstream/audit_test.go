package upstream_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/observe"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
)

// TestProxiedCallsAuditedWithUpstream (issue 12 item 6): every call of a
// proxied tool, allowed, failed or denied, leaves a tool_call record naming
// the upstream, with its arguments redacted like those of nefia's own
// tools; nefia's own tools' records name none; the chain still verifies.
func TestProxiedCallsAuditedWithUpstream(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	bot := f.g.Client(pkitest.KeyPair(t, f.g.Issue("bot", pki.RoleAgent, time.Hour)))
	other := f.g.Client(f.g.Cert("other", pki.RoleAgent))

	servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "hi"})
	servertest.CallTool(t, bot, "up.fail", map[string]any{"token": "s3cr3t-value"})
	servertest.CallTool(t, other, "up.echo", map[string]any{"text": "x"}) // denied
	servertest.CallOK(t, other, "nefia.mtls.status", nil)

	type key struct{ tool, who, outcome string }
	got := map[key]string{}
	for _, r := range f.g.AuditRecords() {
		if r.Event != "tool_call" || r.Agent == nil {
			continue
		}
		got[key{r.Tool, r.Agent.Name, r.Outcome}] = r.Upstream
		if line, _ := json.Marshal(r); strings.Contains(string(line), "s3cr3t-value") {
			t.Errorf("secret argument in the audit record: %s", line)
		}
	}
	tests := []struct {
		name string
		k    key
		want string
	}{
		{name: "allowed proxied call", k: key{"up.echo", "bot", "ok"}, want: "up"},
		{name: "proxied call with a tool error", k: key{"up.fail", "bot", "error"}, want: "up"},
		{name: "denied proxied call", k: key{"up.echo", "other", "denied"}, want: "up"},
		{name: "nefia's own tool", k: key{"nefia.mtls.status", "other", "ok"}, want: ""},
	}
	for _, tt := range tests {
		up, ok := got[tt.k]
		if !ok {
			t.Errorf("%s: no record %+v in %v", tt.name, tt.k, got)
			continue
		}
		if up != tt.want {
			t.Errorf("%s: upstream = %q, want %q", tt.name, up, tt.want)
		}
	}
	if n := f.g.VerifyAudit(); n == 0 {
		t.Error("audit chain verified no records")
	}
	// The proxy's _meta says which upstream it is, over what the upstream sent.
	if m := toolNames(t, bot)["up.echo"].Meta; m == nil || m.AdditionalFields[observe.MetaUpstream] != "up" {
		t.Errorf("up.echo _meta = %+v, want %s = up", m, observe.MetaUpstream)
	}
}
