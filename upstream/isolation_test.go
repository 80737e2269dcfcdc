package upstream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/policy"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// startGatewayPolicy is startGateway with the policy given.
func startGatewayPolicy(t *testing.T, mk func(pub string) config.Upstream, rules []policy.Rule) *fixture {
	t.Helper()
	store := pkitest.NewStore(t)
	signer, err := upstream.LoadSigner(store)
	if err != nil {
		t.Fatal(err)
	}
	pub := store.Path(upstream.PubFile)
	m := upstream.New(upstream.Options{Upstreams: []config.Upstream{mk(pub)}, Signer: signer, ClientVersion: "test"})
	t.Cleanup(func() { m.Close() })
	pol, err := policy.New(rules)
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

// TestToolGlobReadsNoTemplateResource: an agent allowed only the tool
// glob "*_public" (e.g. for tickets.list_public) may not read an item of
// up's template test://up/item/{id} by choosing an id ending in
// "_public": the read is denied like the listing (issue 12, attack item
// 1; on the base the upstream answered the read).
func TestToolGlobReadsNoTemplateResource(t *testing.T) {
	t.Parallel()
	f := startGatewayPolicy(t, func(pub string) config.Upstream { return stdioUpstream("up", pub) }, []policy.Rule{
		{Name: "pub", Allow: []string{"nefia.mtls.status", "*_public"}},
		{Role: pki.RoleOperator, Allow: []string{"*"}},
	})
	c := f.g.Client(f.g.Cert("pub", pki.RoleAgent))
	deadline := time.Now().Add(10 * time.Second)
	for {
		txt, err := readResource(c, "test://up/item/payroll-2026_public")
		if err == nil {
			t.Fatalf("the tool glob \"*_public\" granted a resource read; upstream answered %s", txt)
		}
		if strings.Contains(err.Error(), "permission denied") {
			return // fixed
		}
		if time.Now().After(deadline) {
			t.Fatalf("read: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the upstream lists its templates after start
	}
}

// TestPerClientCapPerCertificate: max_sessions was one pool for all
// callers, and one certificate could hold every per_client session (on the
// base: with max_sessions 3 the hog's third session succeeds and the
// victim gets the max_sessions error). max_sessions_per_client now caps
// each certificate: its third session is refused naming the key, and
// another certificate still gets a session (issue 12, attack item 4).
func TestPerClientCapPerCertificate(t *testing.T) {
	t.Parallel()
	f := startGatewayPolicy(t, func(pub string) config.Upstream {
		u := stdioUpstream("up", pub)
		u.Session, u.MaxSessions, u.MaxSessionsPerClient = config.SessionPerClient, 3, 2
		return u
	}, []policy.Rule{
		{Name: "bot", Allow: []string{"up.*"}},
		{Name: "victim", Allow: []string{"up.*"}},
	})
	hog := f.g.Cert("bot", pki.RoleAgent)
	for i := range 3 { // max_sessions HTTP sessions of one certificate
		c := httpClient(t, f, hog)
		res := servertest.CallTool(t, c, "up.count", nil)
		switch {
		case i < 2 && res.IsError:
			t.Fatalf("hog's call %d: %s", i, text(res))
		case i == 2 && !res.IsError:
			t.Errorf("one certificate opened a third per_client session past max_sessions_per_client 2")
		case i == 2 && !strings.Contains(text(res), "max_sessions_per_client 2"):
			t.Errorf("the refusal does not name max_sessions_per_client: %s", text(res))
		}
	}
	victim := f.g.Client(f.g.Cert("victim", pki.RoleAgent))
	if res := servertest.CallTool(t, victim, "up.count", nil); res.IsError {
		t.Fatalf("one certificate holds every per_client session; another certificate gets: %s", text(res))
	}
}

// TestProgressStaysInItsUpstreamSession: per_client gives each client its
// own upstream session (its own process), but progress tokens were one
// sequential counter per upstream ("nefia-progress-N") looked up in one map
// whatever session a notification came from, so the upstream session of
// client X (a process X may control, e.g. a code sandbox) could send
// progress under a guessed token to client Y. Tokens are now random and
// bound to the session the call went on: neither a guessed token nor the
// victim's real one (leaked here on purpose) crosses sessions (issue 12,
// attack item 5).
func TestProgressStaysInItsUpstreamSession(t *testing.T) {
	t.Parallel()
	f := startGatewayPolicy(t, func(pub string) config.Upstream {
		u := stdioUpstream("up", pub)
		u.Session = config.SessionPerClient
		return u
	}, []policy.Rule{
		{Name: "bot", Allow: []string{"up.*"}},
		{Name: "victim", Allow: []string{"up.*"}},
	})
	victim := f.g.Client(f.g.Cert("victim", pki.RoleAgent))
	attacker := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
	got := make(chan map[string]any, 8)
	victim.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method == string(mcp.MethodNotificationProgress) {
			got <- n.Params.AdditionalFields
		}
	})
	// The victim's slow call with a progress token (its session starts);
	// its upstream process first reports the token it was given.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := mcp.CallToolRequest{}
		req.Params.Name = "up.sleep"
		req.Params.Arguments = map[string]any{"ms": 4000, "leak_token": true}
		req.Params.Meta = &mcp.Meta{ProgressToken: "victim-token"}
		_, _ = victim.CallTool(ctx, req)
	}()
	var leaked string
	select {
	case p := <-got:
		leaked, _ = p["message"].(string)
		if p["progressToken"] != "victim-token" || !strings.HasPrefix(leaked, "nefia-progress-") {
			t.Fatalf("the victim's own progress: %v", p)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the victim's own progress never arrived")
	}
	for _, tok := range []string{leaked, "nefia-progress-1", "nefia-progress-2", "nefia-progress-3"} {
		servertest.CallTool(t, attacker, "up.spoof", map[string]any{"text": tok})
	}
	select {
	case p := <-got:
		t.Fatalf("the victim received progress sent by another client's upstream session: %v", p)
	case <-time.After(time.Second):
	}
}

// TestSharedURIReadFromEarlierUpstream: two upstreams list the same
// resource URI and mcp.upstreams puts "up" first; a second, less trusted
// upstream that answers faster (here an HTTP one against a process that
// must start) used to take the URI for good (first to list won), so reads
// of up's resource went to it with the caller's identity. Configuration
// order decides now: the read goes to up (issue 12, attack item 6).
func TestSharedURIReadFromEarlierUpstream(t *testing.T) {
	t.Parallel()
	f := startGatewayUps(t, func(pub string) []config.Upstream {
		return []config.Upstream{stdioUpstream("up", pub), {Name: "evil", URL: startHTTPUpstream(t, pub)}}
	})
	c := f.g.Client(f.g.Cert("wide", pki.RoleAgent))
	deadline := time.Now().Add(10 * time.Second)
	for {
		txt, err := readResource(c, "test://up/static")
		if err == nil {
			_, verified := seenIdentity(t, txt)
			if v, _ := verified.(map[string]any); v["aud"] != "up" {
				t.Fatalf("test://up/static (listed by up, first in mcp.upstreams) was not read from up: the assertion sent was not for up (%v)", verified)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("read: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
