package server_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
)

// TestAbandonedHTTPSessionsAreSwept: an HTTP session nobody uses (a client
// gone without DELETE) used to end only when some certificate created a new
// session, so what hangs on it (a per_client upstream session and its slot)
// stayed taken. SweepSessions, which the gateway's revocation poll runs
// every server.SweepEvery, ends sessions idle past SessionIdleTTL and
// sessions whose certificate has expired, and keeps the others (issue 12,
// attack item 4).
func TestAbandonedHTTPSessionsAreSwept(t *testing.T) {
	h := startHTTP(t, func(o *server.HTTPOptions) { o.SessionIdleTTL = time.Minute })
	cert, _ := h.issue("bot", pki.RoleOperator)
	c := h.httpClient(&cert, h1Sniffed)
	idle := initialize(t, c, h.url)
	busy := initialize(t, c, h.url)
	ping := `{"jsonrpc":"2.0","id":9,"method":"ping"}`
	if n := h.transport.SweepSessions(); n != 0 {
		t.Fatalf("fresh sessions swept: %d", n)
	}
	h.clock.Advance(50 * time.Second)
	if resp := post(t, c, h.url, busy, ping); resp.StatusCode != http.StatusOK {
		t.Fatalf("busy session: %d", resp.StatusCode)
	}
	h.clock.Advance(20 * time.Second) // idle: 70s unused; busy: 20s
	if n := h.transport.SweepSessions(); n != 1 {
		t.Errorf("swept %d sessions, want the idle one", n)
	}
	for _, tt := range []struct {
		name   string
		sid    string
		status int
	}{{"idle swept", idle, http.StatusNotFound}, {"busy kept", busy, http.StatusOK}} {
		t.Run(tt.name, func(t *testing.T) {
			if resp := post(t, c, h.url, tt.sid, ping); resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

// TestHTTPSessionsEndAtCertificateExpiry: a session used a moment ago
// ends anyway once its certificate has expired (issue 12, attack item 4).
func TestHTTPSessionsEndAtCertificateExpiry(t *testing.T) {
	h := startHTTP(t, func(o *server.HTTPOptions) { o.SessionIdleTTL = 10 * time.Minute })
	cert := pkitest.KeyPair(t, pkitest.Issue(t, h.store, "bot", pki.RoleOperator, 3*time.Minute))
	c := h.httpClient(&cert, h1Sniffed)
	sid := initialize(t, c, h.url)
	h.clock.Advance(2 * time.Minute)
	if resp := post(t, c, h.url, sid, `{"jsonrpc":"2.0","id":9,"method":"ping"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("session before expiry: %d", resp.StatusCode)
	}
	if n := h.transport.SweepSessions(); n != 0 {
		t.Fatalf("swept %d sessions of a valid certificate", n)
	}
	h.clock.Advance(2 * time.Minute) // used 2 minutes ago, certificate expired a minute ago
	if n := h.transport.SweepSessions(); n != 1 {
		t.Errorf("swept %d sessions after the certificate expired, want 1", n)
	}
}
