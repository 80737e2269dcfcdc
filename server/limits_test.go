package server_test

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// limitRefusal reports whether the audit trail holds a refusal of serial
// by the limit named limit (its nefia.yaml key); serial "" is a refusal
// before the handshake, of no one known.
func limitRefusal(gw *servertest.Gateway, serial, limit string) bool {
	for _, r := range gw.AuditRecords() {
		who := ""
		if r.Agent != nil {
			who = r.Agent.Serial
		}
		if r.Event == audit.EventConnectionRejected && r.Reason == server.ReasonLimit &&
			who == serial && strings.Contains(r.Error, limit) {
			return true
		}
	}
	return false
}

// openRPC opens n initialized raw sessions with cert.
func openRPC(t *testing.T, gw *servertest.Gateway, cert tls.Certificate, n int) {
	t.Helper()
	for i := range n {
		c, err := dialRPC(gw, gw.ClientConfig(&cert))
		if err != nil {
			t.Fatalf("connection %d of %s: %v", i+1, cert.Leaf.Subject.CommonName, err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// TestPerClientLimit (issue 10 item 3): one certificate holds at most
// MaxConnectionsPerClient connections (8 by default); the 9th is refused
// and audited with the limit's name, while other certificates still get in.
func TestPerClientLimit(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	hog := gw.Issue("hog", pki.RoleAgent, time.Hour)
	openRPC(t, gw, pkitest.KeyPair(t, hog), server.DefaultMaxConnectionsPerClient)
	if err := gw.Probe(gw.ClientConfig(new(pkitest.KeyPair(t, hog)))); err == nil {
		t.Fatalf("connection %d of one certificate admitted", server.DefaultMaxConnectionsPerClient+1)
	}
	waitFor(t, func() bool { return limitRefusal(gw, hog.Serial, "mcp.mtls.max_connections_per_client (8)") })
	other := gw.Cert("other", pki.RoleAgent)
	if err := gw.Probe(gw.ClientConfig(&other)); err != nil {
		t.Fatalf("another certificate is refused: %v", err)
	}
}

// TestOperatorReserve (issue 10 item 3): with agents in every slot but the
// reserved ones, another agent is refused and operators still get in, up
// to MaxConnections.
func TestOperatorReserve(t *testing.T) {
	t.Parallel()
	const limit = 6 // reserve: the default 2
	gw := servertest.Start(t, func(o *server.GatewayOptions) { o.MaxConnections = limit })
	openRPC(t, gw, gw.Cert("a1", pki.RoleAgent), 2)
	openRPC(t, gw, gw.Cert("a2", pki.RoleAgent), limit-server.DefaultOperatorReserve-2)
	late := gw.Issue("late", pki.RoleAgent, time.Hour)
	if err := gw.Probe(gw.ClientConfig(new(pkitest.KeyPair(t, late)))); err == nil {
		t.Fatal("an agent took a slot reserved for operators")
	}
	waitFor(t, func() bool { return limitRefusal(gw, late.Serial, "mcp.mtls.operator_reserve (2)") })
	ops := gw.Issue("ops", pki.RoleOperator, time.Hour)
	openRPC(t, gw, pkitest.KeyPair(t, ops), server.DefaultOperatorReserve)
	if err := gw.Probe(gw.ClientConfig(new(pkitest.KeyPair(t, ops)))); err == nil {
		t.Fatalf("connection %d admitted", limit+1)
	}
	// Every slot is taken: refused at accept, before its handshake.
	waitFor(t, func() bool { return limitRefusal(gw, "", "mcp.mtls.max_connections (6)") })
}

// TestRevokingTheHogFreesItsSlots (issue 10 item 3): an agent that holds
// connections and says nothing holds no more than its share, an operator
// can still get in to revoke it, and the revocation frees every slot it
// held.
func TestRevokingTheHogFreesItsSlots(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.Logger = slog.New(logs)
		o.MaxConnections = 10
		o.FirstByteTimeout = time.Minute // only the revocation may free them
		// Only the tool may close them: the poll would otherwise race it
		// and the tool would report fewer sessions closed.
		o.RevocationPoll = time.Hour
	})
	hog := gw.Issue("hog", pki.RoleAgent, time.Hour)
	kp := pkitest.KeyPair(t, hog)
	var held []*tls.Conn
	for range server.DefaultMaxConnectionsPerClient {
		held = append(held, dialSilent(t, gw, logs, kp, hog.Serial))
	}
	if err := gw.Probe(gw.ClientConfig(&kp)); err == nil {
		t.Error("the hog got one more connection than its share")
	}
	if got := gw.Count(); got != server.DefaultMaxConnectionsPerClient {
		t.Errorf("Count = %d with the hog's connections open, want %d", got, server.DefaultMaxConnectionsPerClient)
	}
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	res := servertest.CallTool(t, op, "nefia.mtls.revoke", map[string]any{"serial": hog.Serial})
	if closed, _ := servertest.Structured(t, res)["sessions_closed"].(float64); res.IsError || int(closed) != len(held) {
		t.Errorf("revoke closed %v sessions, want %d: %+v", closed, len(held), res.StructuredContent)
	}
	for i, c := range held {
		if _, err := readUntilClosed(c, waitLimit); err != nil {
			t.Fatalf("hog connection %d: %v", i+1, err)
		}
	}
	waitFor(t, func() bool { return gw.Count() == 1 }) // the operator's
}

// TestIdleRawSessionIsClosed (issue 10 item 3): a raw session that sends
// nothing for IdleTimeout is closed, audited as idle, and its slot freed.
func TestIdleRawSessionIsClosed(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	gw := servertest.Start(t, func(o *server.GatewayOptions) { o.IdleTimeout = idle })
	iss := gw.Issue("sleepy", pki.RoleAgent, time.Hour)
	c, err := dialRPC(gw, gw.ClientConfig(new(pkitest.KeyPair(t, iss))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	took, err := readUntilClosed(c.conn, waitLimit)
	if err != nil {
		t.Fatalf("idle session not closed: %v", err)
	}
	if took < idle/2 || took > idle+2*time.Second {
		t.Errorf("idle session closed after %v, want about %v", took, idle)
	}
	waitFor(t, func() bool {
		for _, r := range gw.AuditRecords() {
			if r.Event == audit.EventConnectionClose && r.Reason == server.ReasonIdle && r.Agent != nil && r.Agent.Serial == iss.Serial {
				return true
			}
		}
		return false
	})
	waitFor(t, func() bool { return gw.Count() == 0 })
}
