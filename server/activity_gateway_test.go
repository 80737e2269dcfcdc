package server_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// TestGatewayCountsCallsPerConnection (issue 16, second wave, item 1):
// each connection's calls are counted on it alone, with its last activity,
// however many connections there are, whether they share a certificate
// and whatever transport they speak: calls are counted on the record the
// connection's context carries, not found by remote address any more.
func TestGatewayCountsCallsPerConnection(t *testing.T) {
	t.Parallel()
	g := servertest.Start(t)
	botCert := g.Cert("bot", pki.RoleAgent)
	first, second := g.Client(botCert), g.Client(botCert)
	for range 3 {
		servertest.CallOK(t, first, "nefia.mtls.status", nil)
	}
	servertest.CallOK(t, second, "nefia.mtls.status", nil)

	hc := h2Client(t, g, g.Cert("ops", pki.RoleOperator))
	url := "https://" + g.Addr + "/mcp"
	sid := initialize(t, hc, url)
	for range 2 {
		resp := post(t, hc, url, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nefia.mtls.status","arguments":{}}}`)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("tools/call over HTTP: %d %s", resp.StatusCode, body)
		}
	}

	var counts []int64
	for _, c := range g.Connections() {
		if c.Transport == identity.TransportHTTP {
			if c.Name != "ops" || c.Calls != 2 || !c.LastActivity.After(c.Since) {
				t.Errorf("HTTP connection: %+v, want 2 calls", c)
			}
			continue
		}
		if c.Name != "bot" {
			t.Errorf("unexpected connection %+v", c)
		}
		if c.Calls > 0 && !c.LastActivity.After(c.Since) {
			t.Errorf("connection %s: %d calls, last activity %v not after its start %v", c.ID, c.Calls, c.LastActivity, c.Since)
		}
		counts = append(counts, c.Calls)
	}
	// Oldest first: the first client connected first.
	if len(counts) != 2 || counts[0] != 3 || counts[1] != 1 {
		t.Errorf("raw connections' calls: %v, want [3 1]", counts)
	}
}

// h2Client is a TLS 1.3 HTTP client of the gateway presenting cert, HTTP/2
// when the gateway offers it; its idle connections close with the test.
func h2Client(t *testing.T, g *servertest.Gateway, cert tls.Certificate) *http.Client {
	cfg := g.ClientConfig(&cert)
	cfg.MinVersion = tls.VersionTLS13
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
