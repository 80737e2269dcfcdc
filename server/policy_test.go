package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

func mustPolicy(t *testing.T, rules ...policy.Rule) *policy.Policy {
	t.Helper()
	p, err := policy.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func withPolicy(p *policy.Policy) servertest.Option {
	return func(o *server.GatewayOptions) { o.Policy = p }
}

// lastCall returns the last tool_call record of tool.
func lastCall(t *testing.T, gw *servertest.Gateway, tool string) audit.Record {
	t.Helper()
	recs := gw.AuditRecords()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Event == audit.EventToolCall && recs[i].Tool == tool {
			return recs[i]
		}
	}
	t.Fatalf("no tool_call record of %s", tool)
	return audit.Record{}
}

func text(res *mcp.CallToolResult) string {
	if len(res.Content) == 0 {
		return ""
	}
	tc, _ := res.Content[0].(mcp.TextContent)
	return tc.Text
}

// TestConfigPolicyOverSession runs a gateway whose mcp.policy grants agents
// more than the built-in default, over real mTLS sessions: the extra tool
// shows in tools/list and its call is allowed and audited with the rule
// that allowed it; a call outside the policy is denied, its text names what
// the caller may call, and it is audited as denied with the reason. The
// privilege rule stays independent of the policy: an agent allowed
// issue_client still cannot issue an operator certificate.
func TestConfigPolicyOverSession(t *testing.T) {
	noLeaks(t)
	p := mustPolicy(t,
		policy.Rule{Role: pki.RoleAgent, Allow: []string{"nefia.mtls.status", "nefia.mtls.issue_*"}},
		policy.Rule{Name: "ci-*", Allow: []string{"nefia.mtls.revoke"}},
		policy.Rule{Role: pki.RoleOperator, Allow: []string{"*"}},
	)
	gw := servertest.Start(t, withPolicy(p))
	bot := gw.Client(gw.Cert("bot", pki.RoleAgent))
	ci := gw.Client(gw.Cert("ci-1", pki.RoleAgent))
	ops := gw.Client(gw.Cert("ops", pki.RoleOperator))

	for _, tt := range []struct {
		name string
		c    *client.Client
		want []string
	}{
		{"agent", bot, []string{"nefia.mtls.issue_client", "nefia.mtls.status"}},
		{"ci agent", ci, []string{"nefia.mtls.issue_client", "nefia.mtls.revoke", "nefia.mtls.status"}},
		{"operator", ops, []string{"nefia.gateway.disconnect", "nefia.gateway.sessions", "nefia.mtls.init", "nefia.mtls.issue_client", "nefia.mtls.renew", "nefia.mtls.renew_server", "nefia.mtls.revoke", "nefia.mtls.status"}},
	} {
		got := toolNames(t, tt.c)
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s tools/list = %v, want %v", tt.name, got, tt.want)
		}
	}

	// Allowed by the policy, beyond the default.
	servertest.CallOK(t, bot, "nefia.mtls.issue_client", map[string]any{"name": "helper"})
	r := lastCall(t, gw, "nefia.mtls.issue_client")
	if r.Outcome != audit.OutcomeOK || r.Decision != `allowed: mcp.policy[0] {role: agent} allows "nefia.mtls.issue_*"` {
		t.Errorf("allowed call audited as outcome %q decision %q", r.Outcome, r.Decision)
	}
	var started audit.Record
	for _, rec := range gw.AuditRecords() {
		if rec.Event == audit.EventIssueClient && rec.Outcome == audit.OutcomeStarted {
			started = rec
		}
	}
	if !strings.HasPrefix(started.Decision, "allowed: mcp.policy[0]") {
		t.Errorf("state event decision = %q, want the rule", started.Decision)
	}

	// Allowed to call the tool, still not above its own authority.
	res := servertest.CallTool(t, bot, "nefia.mtls.issue_client", map[string]any{"name": "escalated", "role": "operator"})
	if !res.IsError || !strings.Contains(text(res), `cannot issue certificates with role "operator"`) {
		t.Errorf("agent issued an operator certificate: %+v", res)
	}
	if r := lastCall(t, gw, "nefia.mtls.issue_client"); r.Outcome != audit.OutcomeError || !strings.HasPrefix(r.Decision, "allowed:") {
		t.Errorf("refused escalation audited as outcome %q decision %q, want error under an allowing decision", r.Outcome, r.Decision)
	}
	inv, err := gw.Store.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range inv {
		if c.Name == "escalated" {
			t.Errorf("escalated certificate recorded: %+v", c)
		}
	}

	// Denied: the text names what the caller may call; the audit says why.
	res = servertest.CallTool(t, bot, "nefia.mtls.revoke", map[string]any{"serial": "01"})
	want := `permission denied: "bot" (role "agent") may not call nefia.mtls.revoke: no rule of mcp.policy matching name "bot" with role agent allows nefia.mtls.revoke (allowed: nefia.mtls.issue_client, nefia.mtls.status); ask an operator`
	if !res.IsError || text(res) != want {
		t.Errorf("denial = %q, want %q", text(res), want)
	}
	r = lastCall(t, gw, "nefia.mtls.revoke")
	if r.Outcome != audit.OutcomeDenied || r.Decision != `denied: no rule of mcp.policy matching name "bot" with role agent allows nefia.mtls.revoke` {
		t.Errorf("denied call audited as outcome %q decision %q", r.Outcome, r.Decision)
	}

	// The name rule adds to the role rule for ci-*.
	res = servertest.CallTool(t, ci, "nefia.mtls.revoke", map[string]any{"serial": "01"})
	if r := lastCall(t, gw, "nefia.mtls.revoke"); r.Outcome == audit.OutcomeDenied || r.Decision != `allowed: mcp.policy[1] {name: "ci-*"} allows "nefia.mtls.revoke"` {
		t.Errorf("ci revoke: %q, audited as outcome %q decision %q", text(res), r.Outcome, r.Decision)
	}
	gw.VerifyAudit()
}

// TestPolicyWithoutOperatorRuleFailsClosed: a configured policy replaces
// the default, so an operator no rule matches is denied everything.
func TestPolicyWithoutOperatorRuleFailsClosed(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t, withPolicy(mustPolicy(t, policy.Rule{Role: pki.RoleAgent, Allow: []string{"*"}})))
	ops := gw.Client(gw.Cert("ops", pki.RoleOperator))
	if got := toolNames(t, ops); len(got) != 0 {
		t.Errorf("operator outside every rule sees %v", got)
	}
	res := servertest.CallTool(t, ops, "nefia.mtls.status", nil)
	if !res.IsError || !strings.Contains(text(res), "(allowed: none)") {
		t.Errorf("status = %q", text(res))
	}
	if r := lastCall(t, gw, "nefia.mtls.status"); r.Outcome != audit.OutcomeDenied ||
		r.Decision != `denied: no rule of mcp.policy matches name "ops" with role operator` {
		t.Errorf("audited as outcome %q decision %q", r.Outcome, r.Decision)
	}
}

// TestSetPolicySwapsLive: a running gateway takes a new policy at once, on
// sessions already open.
func TestSetPolicySwapsLive(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	bot := gw.Client(gw.Cert("bot", pki.RoleAgent))
	if got := toolNames(t, bot); !slices.Equal(got, []string{"nefia.mtls.renew", "nefia.mtls.status"}) {
		t.Fatalf("default agent tools = %v", got)
	}
	if gw.Policy().Source() != policy.SourceDefault {
		t.Fatalf("policy source = %q, want the default", gw.Policy().Source())
	}
	gw.SetPolicy(mustPolicy(t, policy.Rule{Role: pki.RoleAgent, Allow: []string{"nefia.mtls.revoke"}}))
	if got := toolNames(t, bot); !slices.Equal(got, []string{"nefia.mtls.revoke"}) {
		t.Errorf("after SetPolicy agent tools = %v", got)
	}
	if res := servertest.CallTool(t, bot, "nefia.mtls.status", nil); !res.IsError {
		t.Error("status still allowed after SetPolicy removed it")
	}
	gw.SetPolicy(nil)
	servertest.CallOK(t, bot, "nefia.mtls.status", nil)
}

// TestPolicyDecisionAuditedOverHTTP: the Streamable HTTP transport gives
// each request its own decision slot too, so a denial there is audited as
// denied with its reason.
func TestPolicyDecisionAuditedOverHTTP(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	cert := gw.Cert("bot", pki.RoleAgent)
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pkitest.CAPool(t, gw.Store), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
	}}
	t.Cleanup(tr.CloseIdleConnections)
	ht, err := transport.NewStreamableHTTP("https://"+gw.Addr+"/mcp", transport.WithHTTPBasicClient(&http.Client{Transport: tr, Timeout: 20 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(ht)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	if res := servertest.CallTool(t, c, "nefia.mtls.init", nil); !res.IsError {
		t.Fatal("agent called init over HTTP")
	}
	r := lastCall(t, gw, "nefia.mtls.init")
	if r.Outcome != audit.OutcomeDenied || r.Transport != "mtls-http" || !strings.HasPrefix(r.Decision, "denied: no rule of the built-in default policy matching") {
		t.Errorf("HTTP denial audited as outcome %q transport %q decision %q", r.Outcome, r.Transport, r.Decision)
	}
	servertest.CallOK(t, c, "nefia.mtls.status", nil)
	if r := lastCall(t, gw, "nefia.mtls.status"); r.Decision != `allowed: default[1] {role: agent} allows "nefia.mtls.status"` {
		t.Errorf("HTTP status decision %q", r.Decision)
	}
}

// TestAuditRecordsTheEnforcedDecision: the audit trail records the
// decision authorize enforced, not a new one. Here the tool itself swaps
// the policy to one that denies it while it runs; the review found the
// audit hook deciding again (tools.Allowed), which would then have recorded
// an allowed, successful call as denied.
func TestAuditRecordsTheEnforcedDecision(t *testing.T) {
	noLeaks(t)
	store := pkitest.NewStore(t)
	trail, err := audit.Open(filepath.Join(t.TempDir(), "audit"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()
	authz := server.NewAuthorizer(mustPolicy(t, policy.Rule{Role: pki.RoleAgent, Allow: []string{"test.*"}}))
	srv, err := server.NewMCPServerWithPolicy(tools.Deps{Store: store, ConfigPath: filepath.Join(store.Dir(), "nefia.yaml")}, authz, nil, trail, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.AddTool(mcp.NewTool("test.swap"), func(context.Context, mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		authz.SetPolicy(mustPolicy(t, policy.Rule{Role: pki.RoleOperator, Allow: []string{"*"}}))
		return mcp.NewToolResultText("swapped"), nil
	})

	peer, conn := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	bot := identity.Agent{Name: "bot", Role: pki.RoleAgent, Transport: identity.TransportStream}
	go func() {
		done <- server.ServeStream(ctx, conn, srv, server.StreamOptions{
			ContextFunc: func(ctx context.Context) context.Context { return identity.WithAgent(ctx, bot) },
		})
	}()
	defer func() { cancel(); peer.Close(); <-done }()
	c := client.NewClient(transport.NewIO(pipeEOF{peer}, peer, io.NopCloser(strings.NewReader(""))))
	defer c.Close()
	cctx, ccancel := context.WithTimeout(ctx, waitLimit)
	defer ccancel()
	if err := c.Start(cctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(cctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	if res := servertest.CallTool(t, c, "test.swap", nil); res.IsError {
		t.Fatalf("test.swap denied: %q", text(res))
	}
	// The new policy is in force for the next call, and that is recorded too.
	if res := servertest.CallTool(t, c, "test.swap", nil); !res.IsError {
		t.Fatal("second call allowed under the swapped policy")
	}
	if err := trail.Flush(); err != nil {
		t.Fatal(err)
	}
	recs, err := audit.Tail(trail.Dir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var calls []audit.Record
	for _, r := range recs {
		if r.Event == audit.EventToolCall {
			calls = append(calls, r)
		}
	}
	if len(calls) != 2 {
		t.Fatalf("%d tool_call records, want 2", len(calls))
	}
	if calls[0].Outcome != audit.OutcomeOK || calls[0].Decision != `allowed: mcp.policy[0] {role: agent} allows "test.*"` {
		t.Errorf("first call audited as outcome %q decision %q, want ok under the rule that allowed it", calls[0].Outcome, calls[0].Decision)
	}
	if calls[1].Outcome != audit.OutcomeDenied || !strings.HasPrefix(calls[1].Decision, "denied: no rule of mcp.policy matches") {
		t.Errorf("second call audited as outcome %q decision %q", calls[1].Outcome, calls[1].Decision)
	}
}

// pipeEOF reports the pipe closed by the test's own cleanup as the end of
// the stream, so the mcp-go client does not log it as a read error.
type pipeEOF struct{ net.Conn }

func (p pipeEOF) Read(b []byte) (int, error) {
	n, err := p.Conn.Read(b)
	if errors.Is(err, io.ErrClosedPipe) {
		err = io.EOF
	}
	return n, err
}
