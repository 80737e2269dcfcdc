package upstream_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// stdioUpstream runs this test binary as the go-sdk upstream (TestMain).
func stdioUpstream(name, pubKeyFile string) config.Upstream {
	return config.Upstream{Name: name, Command: []string{os.Args[0]},
		Env: map[string]string{envRole: "stdio", envPubKey: pubKeyFile}}
}

type fixture struct {
	g   *servertest.Gateway
	m   *upstream.Manager
	pub string // the published public key file
}

// startGateway runs a real mTLS gateway whose MCP server carries the
// upstreams' proxies, with a policy that gives agent "bot" every up.*
// tool, agent "wide" every tool, and other agents only nefia.mtls.status.
func startGateway(t *testing.T, mk func(pub string) config.Upstream) *fixture {
	t.Helper()
	return startGatewayUps(t, func(pub string) []config.Upstream { return []config.Upstream{mk(pub)} })
}

// startGatewayUps is startGateway with several upstreams.
func startGatewayUps(t testing.TB, mk func(pub string) []config.Upstream) *fixture {
	t.Helper()
	store := pkitest.NewStore(t)
	signer, err := upstream.LoadSigner(store)
	if err != nil {
		t.Fatal(err)
	}
	pub := store.Path(upstream.PubFile)
	m := upstream.New(upstream.Options{Upstreams: mk(pub), Signer: signer, ClientVersion: "test"})
	t.Cleanup(func() { m.Close() })
	pol, err := policy.New([]policy.Rule{
		{Name: "bot", Allow: []string{"up.*"}},
		{Name: "wide", Allow: []string{"*"}},
		// reader: the static resource and the prompt, no tool, no template.
		{Name: "reader", Allow: []string{"up.resource:test://up/static", "up.prompt:greet"}},
		{Role: pki.RoleAgent, Allow: []string{"nefia.mtls.status"}},
		{Role: pki.RoleOperator, Allow: []string{"*"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := servertest.StartWithStore(t, store, func(o *server.GatewayOptions) {
		o.Register = m.Register
		o.Policy = pol
		o.RevocationPoll = 50 * time.Millisecond
	})
	return &fixture{g: g, m: m, pub: pub}
}

func toolNames(t *testing.T, c *client.Client) map[string]mcp.Tool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]mcp.Tool{}
	for _, tl := range res.Tools {
		out[tl.Name] = tl
	}
	return out
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// TestGatewayForwardsToUpstream is the slice end to end, over both
// transports: an agent the policy allows sees and calls up.echo, the
// upstream receives the caller's identity in _meta (and headers over HTTP)
// and verifies the signed assertion with the published key; isError
// passes through; another agent neither sees nor may call it; calls are
// audited.
func TestGatewayForwardsToUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		upstream  func(t *testing.T) func(pub string) config.Upstream
		transport string
	}{
		{name: "stdio", transport: "stdio", upstream: func(*testing.T) func(string) config.Upstream {
			return func(pub string) config.Upstream { return stdioUpstream("up", pub) }
		}},
		{name: "http", transport: "http", upstream: func(t *testing.T) func(string) config.Upstream {
			return func(pub string) config.Upstream {
				return config.Upstream{Name: "up", URL: startHTTPUpstream(t, pub)}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, tt.upstream(t))
			iss := f.g.Issue("bot", pki.RoleAgent, time.Hour)
			bot := f.g.Client(pkitest.KeyPair(t, iss))

			tools := toolNames(t, bot)
			echo, ok := tools["up.echo"]
			if !ok {
				t.Fatalf("bot's tools/list = %v, want up.echo", tools)
			}
			if echo.Description != "Echo the text and the _meta received." || !*echo.Annotations.ReadOnlyHint || echo.Annotations.Title != "Echo" {
				t.Errorf("up.echo lost description or annotations: %+v", echo)
			}
			if !strings.Contains(string(mustJSON(t, echo)), `"text"`) || !strings.Contains(string(mustJSON(t, echo)), `"outputSchema"`) {
				t.Errorf("up.echo schemas not passed through: %s", mustJSON(t, echo))
			}

			got := servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "hi"})
			if got["text"] != "hi" || got["transport"] != tt.transport {
				t.Errorf("echo = %v", got)
			}
			meta, _ := got["meta"].(map[string]any)
			agent, _ := meta[upstream.MetaAgent].(map[string]any)
			want := map[string]any{"name": "bot", "serial": iss.Serial, "role": "agent", "fingerprint": iss.Fingerprint}
			for k, v := range want {
				if agent[k] != v {
					t.Errorf("upstream saw agent.%s = %v, want %v (meta %v)", k, agent[k], v, meta)
				}
			}
			claims, ok := got["verified"].(map[string]any)
			if !ok || claims["name"] != "bot" || claims["aud"] != "up" || claims["serial"] != iss.Serial {
				t.Errorf("upstream's verification of the assertion: %v", got["verified"])
			}
			if tt.transport == "http" {
				h, _ := got["headers"].(map[string]any)
				if h[upstream.HeaderAgentName] != "bot" || h[upstream.HeaderAgentSerial] != iss.Serial || h[upstream.HeaderAssertion] != meta[upstream.MetaAssertion] {
					t.Errorf("upstream saw headers %v", h)
				}
			}

			if res := servertest.CallTool(t, bot, "up.fail", nil); !res.IsError || text(res) != "upstream says no" {
				t.Errorf("up.fail = %+v, want the upstream's isError result unchanged", res)
			}

			other := f.g.Client(f.g.Cert("other", pki.RoleAgent))
			if _, ok := toolNames(t, other)["up.echo"]; ok {
				t.Error("agent other sees up.echo; the policy does not allow it")
			}
			if res := servertest.CallTool(t, other, "up.echo", map[string]any{"text": "x"}); !res.IsError || !strings.Contains(text(res), "permission denied") {
				t.Errorf("other's call = %+v %q, want a denial", res, text(res))
			}

			var ok2, denied bool
			for _, r := range f.g.AuditRecords() {
				if r.Tool == "up.echo" && r.Agent != nil && r.Agent.Name == "bot" && r.Outcome == "ok" {
					ok2 = true
				}
				if r.Tool == "up.echo" && r.Agent != nil && r.Agent.Name == "other" && r.Outcome == "denied" {
					denied = true
				}
			}
			if !ok2 || !denied {
				t.Errorf("audit: bot's call recorded %v, other's denial recorded %v", ok2, denied)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUpstreamCallTimeout: a call the upstream never answers comes back as
// a tool error after call_timeout, not a hang.
func TestUpstreamCallTimeout(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream {
		u := stdioUpstream("up", pub)
		u.CallTimeout = 300 * time.Millisecond
		return u
	})
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	start := time.Now()
	res := servertest.CallTool(t, bot, "up.sleep", map[string]any{"ms": 60000})
	took := time.Since(start)
	if !res.IsError || !strings.Contains(text(res), `upstream "up" timed out`) {
		t.Errorf("up.sleep = %+v %q, want a timeout tool error", res, text(res))
	}
	if took > 5*time.Second {
		t.Errorf("timeout answered after %s, want about 300ms", took)
	}
	t.Logf("timeout tool error after %s (call_timeout 300ms)", took)
	// The upstream session survives: the next call works.
	if got := servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "after"}); got["text"] != "after" {
		t.Errorf("echo after timeout = %v", got)
	}
}

// TestUpstreamRestart: killing the stdio upstream gives a tool error that
// says it is down, then the supervisor restarts it and calls work again.
func TestUpstreamRestart(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	pid := int(servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "a"})["pid"].(float64))
	proc, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	res := servertest.CallTool(t, bot, "up.echo", map[string]any{"text": "b"})
	if !res.IsError || !strings.Contains(text(res), `upstream "up" is down`) {
		t.Errorf("call after kill = %+v %q, want a down tool error", res, text(res))
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res := servertest.CallTool(t, bot, "up.echo", map[string]any{"text": "c"})
		if !res.IsError {
			got := servertest.Structured(t, res)
			if int(got["pid"].(float64)) == pid {
				t.Fatalf("answered by the killed process %d", pid)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream not back after 15s: %q; status %+v", text(res), f.m.Status())
		}
		time.Sleep(100 * time.Millisecond) // polling the restart (1s backoff)
	}
	st := f.m.Status()[0]
	if st.State != upstream.StateUp || st.Restarts < 1 || !strings.Contains(st.LastError, "exited") {
		t.Errorf("status after restart = %+v", st)
	}

	// What operators see of it.
	op := f.g.Client(f.g.Cert("ops", pki.RoleOperator))
	got := servertest.CallOK(t, op, upstream.StatusToolName, nil)
	ups, _ := got["upstreams"].([]any)
	if len(ups) != 1 {
		t.Fatalf("%s = %v", upstream.StatusToolName, got)
	}
	u := ups[0].(map[string]any)
	if u["name"] != "up" || u["state"] != "up" || u["tools"] != float64(9) || u["restarts"].(float64) < 1 || !strings.Contains(u["last_error"].(string), "exited") {
		t.Errorf("%s = %v", upstream.StatusToolName, u)
	}
}

// TestGatewayStatusOperatorsOnly: nefia.gateway.status is not listed to an
// agent under the usual policy, and refused to an agent even when a policy
// lets it list everything.
func TestGatewayStatusOperatorsOnly(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	if _, ok := toolNames(t, f.g.Client(f.g.Cert("bot", pki.RoleAgent)))[upstream.StatusToolName]; ok {
		t.Errorf("agent bot sees %s", upstream.StatusToolName)
	}
	wide := f.g.Client(f.g.Cert("wide", pki.RoleAgent))
	if _, ok := toolNames(t, wide)[upstream.StatusToolName]; !ok {
		t.Fatalf("agent wide (policy *) does not list %s", upstream.StatusToolName)
	}
	if res := servertest.CallTool(t, wide, upstream.StatusToolName, nil); !res.IsError || !strings.Contains(text(res), "operators only") {
		t.Errorf("agent wide's call = %+v %q, want refused", res, text(res))
	}
}

// TestUpstreamListChanged: a tool the upstream adds reaches connected
// clients as notifications/tools/list_changed and in tools/list.
func TestUpstreamListChanged(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	changed := make(chan struct{}, 10)
	bot.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == mcp.MethodNotificationToolsListChanged {
			changed <- struct{}{}
		}
	})
	if _, ok := toolNames(t, bot)["up.extra"]; ok {
		t.Fatal("up.extra listed before it exists")
	}
	servertest.CallOK(t, bot, "up.grow", nil)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no tools/list_changed within 10s")
	}
	if _, ok := toolNames(t, bot)["up.extra"]; !ok {
		t.Fatalf("up.extra not listed after list_changed: %v", toolNames(t, bot))
	}
	if res := servertest.CallTool(t, bot, "up.extra", nil); res.IsError || text(res) != "extra" {
		t.Errorf("up.extra = %+v", res)
	}
}

// TestUpstreamMessageLimit: a stdio upstream answering with more than
// MaxMessageBytes on one line gets a tool error, not the gateway's memory,
// and is restarted.
func TestUpstreamMessageLimit(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	res := servertest.CallTool(t, bot, "up.big", nil)
	if !res.IsError || !strings.Contains(text(res), `upstream "up" is down`) {
		t.Errorf("up.big = %.200q, want a down tool error", text(res))
	}
	deadline := time.Now().Add(15 * time.Second)
	for servertest.CallTool(t, bot, "up.echo", map[string]any{"text": "x"}).IsError {
		if time.Now().After(deadline) {
			t.Fatalf("upstream not back: %+v", f.m.Status())
		}
		time.Sleep(100 * time.Millisecond) // polling the restart (1s backoff)
	}
	if st := f.m.Status()[0]; !strings.Contains(st.LastError, "larger than") || st.Restarts < 1 {
		t.Errorf("status = %+v, want the size limit as last error and a restart", st)
	}
}

// callProgress calls up.progress, which sends two progress notifications
// before its answer, under progress token "mine-1"; the call must succeed.
func callProgress(t *testing.T, c *client.Client) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = "up.progress"
	req.Params.Meta = &mcp.Meta{ProgressToken: "mine-1"}
	res, err := c.CallTool(ctx, req)
	if err != nil || res.IsError {
		t.Fatalf("up.progress = %+v, %v", res, err)
	}
	return res
}

// TestUpstreamProgress: the upstream's progress notifications reach the
// caller under the caller's own token, while the upstream saw a token
// nefia issued; over HTTP they arrive on the call's own event stream
// (httpCaller).
func TestUpstreamProgress(t *testing.T) {
	t.Parallel()
	for _, tt := range bothTransports {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testUpstreamProgress(t, startGateway(t, tt.upstream(t)))
		})
	}
}

func testUpstreamProgress(t *testing.T, f *fixture) {
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	var mu sync.Mutex
	var got []map[string]any
	bot.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == string(mcp.MethodNotificationProgress) {
			mu.Lock()
			got = append(got, n.Params.AdditionalFields)
			mu.Unlock()
		}
	})
	res := callProgress(t, bot)
	if seen := text(res); !strings.HasPrefix(seen, "nefia-progress-") {
		t.Errorf("upstream saw progress token %q, want one nefia issued", seen)
	}
	// The stream writer sends queued notifications before the response.
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0]["progressToken"] != "mine-1" || got[1]["progress"] != float64(2) || got[1]["message"] != "step 2" {
		t.Errorf("progress seen by the caller = %v", got)
	}
}

// TestUpstreamCancellation: a caller cancelling its call
// (notifications/cancelled to the gateway) cancels the forwarded call in
// the upstream.
func TestUpstreamCancellation(t *testing.T) {
	t.Parallel()
	f := startGateway(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) })
	bot := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	mark := filepath.Join(t.TempDir(), "cancelled")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = "up.sleep"
	req.Params.Arguments = map[string]any{"ms": 60000, "cancelled_file": mark}
	if _, err := bot.CallTool(ctx, req); err == nil {
		t.Fatal("call returned before it was cancelled")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(mark); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upstream's handler was not cancelled within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling a file another process writes
	}
	// The shared session is unharmed.
	if got := servertest.CallOK(t, bot, "up.echo", map[string]any{"text": "next"}); got["text"] != "next" {
		t.Errorf("echo after cancel = %v", got)
	}
}

// TestManagerUpdate: a configuration update adds and removes upstreams
// live; an unchanged one keeps its process, a changed one is restarted,
// and connected clients see the new tool list.
func TestManagerUpdate(t *testing.T) {
	t.Parallel()
	var up config.Upstream
	f := startGateway(t, func(pub string) config.Upstream { up = stdioUpstream("up", pub); return up })
	bot := f.g.Client(f.g.Cert("wide", pki.RoleAgent))
	changed := make(chan struct{}, 100)
	bot.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == mcp.MethodNotificationToolsListChanged {
			changed <- struct{}{}
		}
	})
	pidOf := func(tool string) int {
		return int(servertest.CallOK(t, bot, tool, map[string]any{"text": "x"})["pid"].(float64))
	}
	upPID := pidOf("up.echo")

	two := stdioUpstream("two", "")
	if err := f.m.Update([]config.Upstream{up, two}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, ok := toolNames(t, bot)["two.echo"]; ok {
			break
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("two.echo not listed after the update: %v", toolNames(t, bot))
		}
	}
	if pid := pidOf("up.echo"); pid != upPID {
		t.Errorf("unchanged upstream up was restarted (pid %d -> %d)", upPID, pid)
	}
	twoPID := pidOf("two.echo")

	two.CallTimeout = 5 * time.Second
	if err := f.m.Update([]config.Upstream{two}); err != nil {
		t.Fatal(err)
	}
	if _, ok := toolNames(t, bot)["up.echo"]; ok {
		t.Error("up.echo still listed after up was removed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = "up.echo"
	if res, err := bot.CallTool(ctx, req); err == nil && !res.IsError {
		t.Errorf("up.echo answered after up was removed: %+v", res)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		res := servertest.CallTool(t, bot, "two.echo", map[string]any{"text": "y"})
		if !res.IsError {
			if pid := int(servertest.Structured(t, res)["pid"].(float64)); pid == twoPID {
				t.Errorf("changed upstream two kept its process %d", pid)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two not back after its change: %q", text(res))
		}
		time.Sleep(50 * time.Millisecond) // polling the new process's start
	}
	if st := f.m.Status(); len(st) != 1 || st[0].Name != "two" {
		t.Errorf("status after the updates = %+v", st)
	}
}
