package upstream_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/upstream"
)

// httpClient is an initialized mcp-go client of the gateway over
// Streamable HTTP with the certificate of name; Close sends DELETE.
func httpClient(t *testing.T, f *fixture, cert tls.Certificate) *client.Client {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.g.ClientConfig(&cert)}, Timeout: 20 * time.Second}
	tr, err := transport.NewStreamableHTTP("https://"+f.g.Addr+"/mcp", transport.WithHTTPBasicClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	c := client.NewClient(tr)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Initialize(ctx, servertest.InitializeRequest()); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitSessions waits until the upstream has n per-client sessions open.
func waitSessions(t *testing.T, m *upstream.Manager, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.Status()[0].Sessions != n {
		if time.Now().After(deadline) {
			t.Fatalf("per-client sessions = %d, want %d", m.Status()[0].Sessions, n)
		}
		time.Sleep(20 * time.Millisecond) // polling Status: the close is asynchronous by design
	}
}

// TestUpstreamPerClientSessions (issue 12 item 3): with session:
// per_client each client session gets its own upstream session (its own
// process for a command), so a stateful upstream keeps state per client;
// at max_sessions one more client gets a tool error; a client's upstream
// session closes when its session ends (raw stream closed, HTTP DELETE,
// certificate revoked), which makes room for the next.
func TestUpstreamPerClientSessions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		upstream func(t *testing.T, pub string) config.Upstream
	}{
		{name: "stdio", upstream: func(_ *testing.T, pub string) config.Upstream { return stdioUpstream("up", pub) }},
		{name: "http", upstream: func(t *testing.T, pub string) config.Upstream {
			return config.Upstream{Name: "up", URL: startHTTPUpstream(t, pub)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startGateway(t, func(pub string) config.Upstream {
				u := tt.upstream(t, pub)
				u.Session, u.MaxSessions = config.SessionPerClient, 2
				return u
			})
			count := func(c *client.Client) string { return text(servertest.CallTool(t, c, "up.count", nil)) }
			a := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
			b := httpClient(t, f, f.g.Cert("bot", pki.RoleAgent))
			for i, want := range []string{"1", "2"} {
				if got := count(a); got != want {
					t.Fatalf("a's call %d = %q, want %q (its own session)", i+1, got, want)
				}
			}
			if got := count(b); got != "1" {
				t.Fatalf("b's first call = %q, want 1: sessions shared between clients", got)
			}
			waitSessions(t, f.m, 2)

			c := f.g.Client(f.g.Cert("bot", pki.RoleAgent))
			res := servertest.CallTool(t, c, "up.count", nil)
			if !res.IsError || !strings.Contains(text(res), "max_sessions 2") {
				t.Fatalf("third client's call = %q (isError %v), want the max_sessions tool error", text(res), res.IsError)
			}

			// Ending a's raw stream closes its upstream session.
			a.Close()
			waitSessions(t, f.m, 1)
			if got := count(c); got != "1" {
				t.Fatalf("c's call after a left = %q, want 1", got)
			}
			// b's HTTP DELETE closes its upstream session.
			waitSessions(t, f.m, 2)
			b.Close()
			waitSessions(t, f.m, 1)
			dIss := f.g.Issue("bot", pki.RoleAgent, time.Hour)
			d := httpClient(t, f, pkitest.KeyPair(t, dIss))
			if got := count(d); got != "1" {
				t.Fatalf("d's call = %q, want 1", got)
			}
			if got := count(c); got != "2" {
				t.Fatalf("c's second call = %q, want 2", got)
			}
			// Revoking d's certificate ends its HTTP session, and with it
			// its upstream session.
			waitSessions(t, f.m, 2)
			if _, err := f.g.Store.Revoke(dIss.Serial, "test"); err != nil {
				t.Fatal(err)
			}
			waitSessions(t, f.m, 1)
		})
	}
}
