package server_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// dialSilent connects with cert, completes the handshake and sends
// nothing; it returns once the gateway has admitted the connection (it
// then waits for the first byte), so whatever the test does next reaches a
// connection in that state.
func dialSilent(t *testing.T, gw *servertest.Gateway, logs *logRecorder, kp tls.Certificate, serial string, alpn ...string) *tls.Conn {
	t.Helper()
	mark := logs.len()
	cfg := gw.ClientConfig(&kp)
	cfg.NextProtos = alpn
	conn, err := gw.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	waitFor(t, func() bool { return logs.has(mark, slog.LevelDebug, "awaiting its first message", serial) })
	return conn
}

// TestRevocationReachesSilentConnections (issue 10 item 1): a connection
// that completed its handshake and sent nothing used to sit in no table, so
// neither revocation path nor a CA replacement closed it, and it could
// later speak as a raw session. Each way must now close it, the tool at
// once and the CLI (the store, seen by the poll) within 1s, and free its
// slot. An HTTP connection (ALPN h2) that sends no request is reached the
// same way.
func TestRevocationReachesSilentConnections(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		poll   time.Duration // RevocationPoll
		within time.Duration // the act's call included
		act    func(t *testing.T, gw *servertest.Gateway, op *client.Client, victim *pki.Issued)
	}{
		{name: "tool", poll: time.Hour /* only the tool can close it */, within: time.Second, act: func(t *testing.T, gw *servertest.Gateway, op *client.Client, victim *pki.Issued) {
			res := servertest.CallTool(t, op, "nefia.mtls.revoke", map[string]any{"serial": victim.Serial})
			if closed, _ := servertest.Structured(t, res)["sessions_closed"].(float64); res.IsError || closed != 1 {
				t.Errorf("revoke result: %+v", res.StructuredContent)
			}
		}},
		{name: "CLI", poll: server.DefaultRevocationPoll, within: time.Second, act: func(t *testing.T, gw *servertest.Gateway, _ *client.Client, victim *pki.Issued) {
			if _, err := gw.Store.Revoke(victim.Serial, "cli"); err != nil {
				t.Fatal(err)
			}
		}},
		// Issue 16: the gateway watches the store and its log, so the
		// CLI's revocation closes it without waiting for the poll.
		{name: "CLI watched", poll: time.Hour, within: time.Second, act: func(t *testing.T, gw *servertest.Gateway, _ *client.Client, victim *pki.Issued) {
			if _, err := gw.Store.Revoke(victim.Serial, "cli"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "CA replaced", poll: server.DefaultRevocationPoll, within: time.Second, act: func(t *testing.T, gw *servertest.Gateway, _ *client.Client, _ *pki.Issued) {
			if _, err := gw.Store.Init(pki.InitOptions{Hosts: []string{"127.0.0.1"}, Force: true}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, transport := range []string{"raw", "h2"} {
		for _, tt := range tests {
			t.Run(transport+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				testSilentRevocation(t, transport, tt.poll, tt.within, tt.act)
			})
		}
	}
}

// testSilentRevocation is one case of TestRevocationReachesSilentConnections.
func testSilentRevocation(t *testing.T, transport string, poll, within time.Duration, act func(*testing.T, *servertest.Gateway, *client.Client, *pki.Issued)) {
	var alpn []string
	if transport == "h2" {
		alpn = []string{"h2"}
	}
	logs := &logRecorder{}
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.Logger = slog.New(logs)
		o.RevocationPoll = poll
		o.FirstByteTimeout = time.Minute // only the revocation may close it
	})
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	base := gw.Count()
	victim := gw.Issue("silent", pki.RoleAgent, time.Hour)
	conn := dialSilent(t, gw, logs, pkitest.KeyPair(t, victim), victim.Serial, alpn...)

	start := time.Now()
	act(t, gw, op, victim)
	if _, err := readUntilClosed(conn, waitLimit); err != nil {
		t.Fatalf("silent connection not closed: %v", err)
	}
	took := time.Since(start)
	t.Logf("silent %s connection closed %v after the act", transport, took.Round(time.Millisecond))
	if took > within {
		t.Errorf("closed after %v, want within %v", took, within)
	}
	// Its slot is free again (a CA replacement also closes op's).
	waitFor(t, func() bool { return gw.Count() <= base })
}

// TestRevokedWhileSilentIsNeverServed (issue 10 item 1): a connection whose
// certificate is revoked while it waits to speak, in a way no poll reaches
// before it speaks, is refused when it does, instead of being served as a
// raw session on the strength of its old handshake. This is how a revoked
// operator minted itself a new certificate.
func TestRevokedWhileSilentIsNeverServed(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.Logger = slog.New(logs)
		o.RevocationPoll = time.Hour // the CLI's revocation is not seen by the poll
		o.FirstByteTimeout = time.Minute
		// Nor by the watch of the store (issue 16): embedding hides
		// RevocationChecker.Watch, so only speaking can reveal it.
		o.Revocations = struct{ server.Revocations }{o.Revocations}
	})
	victim := gw.Issue("op", pki.RoleOperator, time.Hour)
	conn := dialSilent(t, gw, logs, pkitest.KeyPair(t, victim), victim.Serial)
	if _, err := gw.Store.Revoke(victim.Serial, "cli"); err != nil {
		t.Fatal(err)
	}
	before := len(gw.AuditRecords())

	_ = conn.SetDeadline(time.Now().Add(waitLimit))
	fmt.Fprintln(conn, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nefia.mtls.status","arguments":{}}}`)
	if line, err := bufio.NewReader(conn).ReadString('\n'); err == nil {
		t.Fatalf("a connection revoked while silent was served: %.200s", line)
	}
	waitFor(t, func() bool {
		for _, r := range gw.AuditRecords()[before:] {
			if r.Event == audit.EventConnectionRejected && r.Reason == server.ReasonRevoked && r.Agent != nil && r.Agent.Serial == victim.Serial {
				return true
			}
		}
		return false
	})
	for _, r := range gw.AuditRecords()[before:] {
		if r.Event == audit.EventConnectionOpen || r.Event == audit.EventToolCall {
			t.Errorf("audit shows %s for the revoked connection", r.Event)
		}
	}
}

// TestFirstByteDeadline (issue 10 item 1): a connection that handshakes and
// then says nothing is closed at FirstByteTimeout, with the reason audited.
func TestFirstByteDeadline(t *testing.T) {
	t.Parallel()
	const deadline = 300 * time.Millisecond
	logs := &logRecorder{}
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.Logger = slog.New(logs)
		o.FirstByteTimeout = deadline
	})
	iss := gw.Issue("mute", pki.RoleAgent, time.Hour)
	conn, err := gw.Dial(gw.ClientConfig(new(pkitest.KeyPair(t, iss))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	took, err := readUntilClosed(conn, waitLimit)
	if err != nil {
		t.Fatalf("silent connection not closed: %v", err)
	}
	t.Logf("silent connection closed after %v (deadline %v)", took.Round(time.Millisecond), deadline)
	if took < deadline/2 || took > deadline+2*time.Second {
		t.Errorf("closed after %v, want about %v", took, deadline)
	}
	waitFor(t, func() bool {
		for _, r := range gw.AuditRecords() {
			if r.Event == audit.EventConnectionClose && r.Reason == server.ReasonFirstByteTimeout && r.Agent != nil && r.Agent.Serial == iss.Serial {
				return true
			}
		}
		return false
	})
	waitFor(t, func() bool { return gw.Count() == 0 })
}
