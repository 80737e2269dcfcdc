package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

const waitLimit = 10 * time.Second

// noLeaks checks, after every other cleanup (the gateway's shutdown
// included), that no goroutine outlives the test.
func noLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
}

func toolNames(t *testing.T, c *client.Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	return names
}

func TestMCPGoClientOverMTLS(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))

	if got := strings.Join(toolNames(t, op), ","); got != "nefia.gateway.disconnect,nefia.gateway.sessions,nefia.mtls.init,nefia.mtls.issue_client,nefia.mtls.renew,nefia.mtls.renew_server,nefia.mtls.revoke,nefia.mtls.status" {
		t.Errorf("operator sees tools %s", got)
	}
	status := servertest.CallTool(t, op, "nefia.mtls.status", nil)
	if status.IsError {
		t.Fatalf("status: %v", status.Content)
	}
	if n, _ := servertest.Structured(t, status)["connections"].(float64); n != 1 {
		t.Errorf("status connections = %v, want 1", servertest.Structured(t, status)["connections"])
	}
	issued := servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "bot", "duration": "1h"})
	if issued.IsError {
		t.Fatalf("issue_client: %v", issued.Content)
	}
	serial, _ := servertest.Structured(t, issued)["serial"].(string)
	revoked := servertest.CallTool(t, op, "nefia.mtls.revoke", map[string]any{"serial": serial, "reason": "test"})
	if revoked.IsError || servertest.Structured(t, revoked)["serial"] != serial {
		t.Fatalf("revoke: %v", revoked.Content)
	}
	reinit := servertest.CallTool(t, op, "nefia.mtls.init", map[string]any{"hosts": []string{"localhost"}})
	if !reinit.IsError {
		t.Error("init over an existing CA succeeded without force")
	}
}

func TestGoSDKClientOverMTLS(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	cert := gw.Cert("sdk-ops", pki.RoleOperator)
	conn, err := gw.Dial(gw.ClientConfig(&cert))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c := sdk.NewClient(&sdk.Implementation{Name: "go-sdk-test", Version: "1"}, nil)
	sess, err := c.Connect(ctx, &sdk.IOTransport{Reader: conn, Writer: conn}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	list, err := sess.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Tools) != 8 {
		t.Errorf("go-sdk sees %d tools, want 8", len(list.Tools))
	}
	call := func(name string, args map[string]any) *sdk.CallToolResult {
		t.Helper()
		res, err := sess.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	if res := call("nefia.mtls.status", map[string]any{}); res.IsError || res.StructuredContent == nil {
		t.Errorf("status: %+v", res)
	}
	res := call("nefia.mtls.issue_client", map[string]any{"name": "sdk-bot"})
	if res.IsError {
		t.Fatalf("issue_client: %+v", res.Content)
	}
	serial := res.StructuredContent.(map[string]any)["serial"].(string)
	if res := call("nefia.mtls.revoke", map[string]any{"serial": serial}); res.IsError {
		t.Errorf("revoke: %+v", res.Content)
	}
	if res := call("nefia.mtls.init", map[string]any{"hosts": []any{"localhost"}}); !res.IsError {
		t.Error("init over an existing CA succeeded without force")
	}
}

// TestConcurrentSessionsSeeTheirOwnIdentity opens 20 sessions with 20
// certificates; each must be served as itself.
func TestConcurrentSessionsSeeTheirOwnIdentity(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	const n = 20
	certs := make([]tls.Certificate, n)
	for i := range certs {
		certs[i] = gw.Cert(fmt.Sprintf("agent-%02d", i), pki.RoleAgent)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := gw.Client(certs[i])
			res := servertest.CallTool(t, c, "nefia.mtls.status", nil)
			caller, _ := servertest.Structured(t, res)["caller"].(map[string]any)
			if caller["name"] != fmt.Sprintf("agent-%02d", i) || caller["serial"] != pki.FormatSerial(certs[i].Leaf.SerialNumber) || caller["role"] != "agent" {
				t.Errorf("session %d sees caller %v", i, caller)
			}
		}()
	}
	wg.Wait()
}

func TestAgentRoleIsLimited(t *testing.T) {
	gw := servertest.Start(t)
	agent := gw.Client(gw.Cert("agent", pki.RoleAgent))
	if got := strings.Join(toolNames(t, agent), ","); got != "nefia.mtls.renew,nefia.mtls.status" {
		t.Errorf("agent sees tools %s, want only renew and status", got)
	}
	target := gw.Issue("victim", pki.RoleAgent, time.Hour)
	before, _ := gw.Store.List()
	for _, tt := range []struct {
		tool string
		args map[string]any
	}{
		{"nefia.mtls.issue_client", map[string]any{"name": "escalate", "role": "operator"}},
		{"nefia.mtls.issue_client", map[string]any{"name": "peer"}},
		{"nefia.mtls.revoke", map[string]any{"serial": target.Serial}},
		{"nefia.mtls.init", map[string]any{"hosts": []string{"localhost"}, "force": true}},
	} {
		t.Run(tt.tool, func(t *testing.T) {
			res := servertest.CallTool(t, agent, tt.tool, tt.args)
			if !res.IsError {
				t.Fatal("agent call succeeded")
			}
			text := res.Content[0].(mcp.TextContent).Text
			if !strings.Contains(text, "permission denied") || !strings.Contains(text, "agent") {
				t.Errorf("denial does not say why: %q", text)
			}
		})
	}
	after, _ := gw.Store.List()
	if len(after) != len(before) || after[len(after)-1].State != pki.StateActive {
		t.Error("a denied call changed the state")
	}
}

func TestRefusedConnections(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	caCert, caKey := pkitest.LoadCA(t, gw.Store)
	foreign := pkitest.NewForeignCA(t)
	revoked := gw.Issue("revoked", pki.RoleAgent, time.Hour)
	if _, err := gw.Store.Revoke(revoked.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	leaf := func(l pkitest.Leaf) *tls.Certificate {
		c := pkitest.SignLeaf(t, caCert, caKey, l)
		return &c
	}
	good := gw.Cert("good", pki.RoleAgent)

	tests := []struct {
		name   string
		cfg    func() *tls.Config
		alert  string // what the client is told
		reason string // what the audit trail records
		cn     string // the presented certificate's name, when there is one
	}{
		{"no certificate", func() *tls.Config { return gw.ClientConfig(nil) }, "certificate required", server.ReasonNoCertificate, ""},
		{"another CA", func() *tls.Config {
			c := foreign.Sign(t, pkitest.Leaf{CN: "intruder", OU: "operator"})
			return gw.ClientConfig(&c)
		}, "bad certificate", server.ReasonUnknownCA, "intruder"},
		{"expired", func() *tls.Config {
			return gw.ClientConfig(leaf(pkitest.Leaf{CN: "old", OU: "agent", NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}))
		}, "bad certificate", server.ReasonExpired, "old"},
		{"not yet valid", func() *tls.Config {
			return gw.ClientConfig(leaf(pkitest.Leaf{CN: "future", OU: "agent", NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}))
		}, "bad certificate", server.ReasonNotYetValid, "future"},
		{"revoked", func() *tls.Config {
			kp := pkitest.KeyPair(t, revoked)
			return gw.ClientConfig(&kp)
		}, "bad certificate", server.ReasonRevoked, "revoked"},
		{"server-auth-only certificate", func() *tls.Config {
			return gw.ClientConfig(leaf(pkitest.Leaf{CN: "srv", OU: "agent", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
		}, "bad certificate", server.ReasonBadUsage, "srv"},
		{"no role", func() *tls.Config { return gw.ClientConfig(leaf(pkitest.Leaf{CN: "norole"})) }, "bad certificate", server.ReasonNoRole, "norole"},
		{"TLS 1.2 only", func() *tls.Config {
			cfg := gw.ClientConfig(&good)
			cfg.MaxVersion = tls.VersionTLS12
			return cfg
		}, "protocol version", server.ReasonProtocol, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(gw.AuditRecords())
			err := gw.Probe(tt.cfg())
			if err == nil {
				t.Fatal("connection admitted")
			}
			if !strings.Contains(err.Error(), tt.alert) {
				t.Errorf("refused with %q, want it to mention %q", err, tt.alert)
			}
			var rec *audit.Record
			waitFor(t, func() bool {
				recs := gw.AuditRecords()
				for i := before; i < len(recs); i++ {
					if recs[i].Event == audit.EventConnectionRejected {
						rec = &recs[i]
						return true
					}
				}
				return false
			})
			if rec.Reason != tt.reason || rec.Outcome != audit.OutcomeDenied {
				t.Errorf("audited reason %q outcome %q, want %q denied", rec.Reason, rec.Outcome, tt.reason)
			}
			if tt.cn != "" && (rec.Agent == nil || rec.Agent.Name != tt.cn || rec.Agent.Serial == "") {
				t.Errorf("audited certificate %+v, want CN %q with its serial", rec.Agent, tt.cn)
			}
		})
	}
	if err := gw.Probe(gw.ClientConfig(&good)); err != nil {
		t.Fatalf("a good certificate is refused after the bad ones: %v", err)
	}
}

// readUntilClosed reads from conn until it fails and returns how long that took.
func readUntilClosed(conn net.Conn, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return time.Since(start), fmt.Errorf("still open after %v", limit)
	}
	return time.Since(start), nil
}

func TestRevocationClosesLiveSessions(t *testing.T) {
	for _, via := range []string{"store (as the CLI does)", "MCP tool"} {
		t.Run(via, func(t *testing.T) {
			noLeaks(t)
			poll := 200 * time.Millisecond
			if via == "MCP tool" {
				// Only the tool may close it, so that it counts the session
				// it closed: the poll would race it.
				poll = time.Hour
			}
			gw := servertest.Start(t, func(o *server.GatewayOptions) { o.RevocationPoll = poll })
			victim := gw.Issue("victim", pki.RoleAgent, time.Hour)
			kp := pkitest.KeyPair(t, victim)
			conn, err := gw.Dial(gw.ClientConfig(&kp))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// A ping round trip proves the session is live.
			fmt.Fprintln(conn, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
			_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
			if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if via == "MCP tool" {
				op := gw.Client(gw.Cert("ops", pki.RoleOperator))
				res := servertest.CallTool(t, op, "nefia.mtls.revoke", map[string]any{"serial": victim.Serial})
				if closed, _ := servertest.Structured(t, res)["sessions_closed"].(float64); res.IsError || closed != 1 {
					t.Errorf("revoke result: %+v", res.StructuredContent)
				}
			} else if _, err := gw.Store.Revoke(victim.Serial, "cli"); err != nil {
				t.Fatal(err)
			}
			if _, err := readUntilClosed(conn, waitLimit); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("session closed %v after the revocation, want within 1s", took)
			}
			if err := gw.Probe(gw.ClientConfig(&kp)); err == nil {
				t.Error("a revoked certificate still connects")
			}
		})
	}
}

func TestExpiryEndsTheSession(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	iss := gw.Issue("short", pki.RoleAgent, 1500*time.Millisecond)
	kp := pkitest.KeyPair(t, iss)
	conn, err := gw.Dial(gw.ClientConfig(&kp))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintln(conn, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	if _, err := readUntilClosed(conn, waitLimit); err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(iss.NotAfter) {
		t.Errorf("session closed at %v, before the certificate's NotAfter %v", now, iss.NotAfter)
	}
}

func TestConnectionLimit(t *testing.T) {
	noLeaks(t)
	const limit = server.DefaultMaxConnections // 50: the 51st is refused
	// One certificate holds every slot: the global limit alone is tested
	// here (the per-client limit and the operator reserve in limits_test.go).
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.MaxConnectionsPerClient = limit
		o.OperatorReserve = server.NoOperatorReserve
	})
	cert := gw.Cert("many", pki.RoleAgent)
	var open []*tls.Conn
	for range limit {
		c, err := gw.Dial(gw.ClientConfig(&cert))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(c, `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		_ = c.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	start := time.Now()
	if err := gw.Probe(gw.ClientConfig(&cert)); err == nil {
		t.Fatal("connection over the limit admitted")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("refusal took %v: it was queued, not refused at once", took)
	}
	open[0].Close()
	waitFor(t, func() bool { return gw.Count() < limit })
	if err := gw.Probe(gw.ClientConfig(&cert)); err != nil {
		t.Fatalf("a slot freed by a close is not reusable: %v", err)
	}
	for _, c := range open[1:] {
		c.Close()
	}
}

// TestNoSlotLeaks drops 1,000 connections abruptly at different points and
// then checks that every slot came back.
func TestNoSlotLeaks(t *testing.T) {
	noLeaks(t)
	const limit = 10
	gw := servertest.Start(t, func(o *server.GatewayOptions) {
		o.MaxConnections = limit
		o.MaxConnectionsPerClient = limit // one certificate churns every slot
		o.OperatorReserve = server.NoOperatorReserve
		o.HandshakeTimeout = 500 * time.Millisecond
	})
	cert := gw.Cert("churn", pki.RoleAgent)
	cfg := gw.ClientConfig(&cert)
	n := 1000
	if testing.Short() {
		n = 200
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, limit)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			switch i % 4 {
			case 0: // TCP only, then gone
				if c, err := net.Dial("tcp", gw.Addr); err == nil {
					c.Close()
				}
			case 1: // half a ClientHello
				if c, err := net.Dial("tcp", gw.Addr); err == nil {
					c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
					c.Close()
				}
			case 2: // full handshake, then gone
				if c, err := gw.Dial(cfg); err == nil {
					c.Close()
				}
			case 3: // mid-request
				if c, err := gw.Dial(cfg); err == nil {
					c.Write([]byte(`{"jsonrpc":"2.0","id":1,"meth`))
					c.Close()
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, func() bool { return gw.Count() == 0 })
	var open []*tls.Conn
	for range limit {
		c, err := gw.Dial(cfg)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if err := pingOn(c); err != nil {
			t.Fatalf("slot %d after churn: %v", len(open), err)
		}
	}
	if err := gw.Probe(cfg); err == nil {
		t.Error("limit+1 admitted after churn")
	}
	for _, c := range open {
		c.Close()
	}
}

func TestStalledHandshakeIsCutAtTheDeadline(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t, func(o *server.GatewayOptions) { o.HandshakeTimeout = 300 * time.Millisecond })
	stalled, err := net.Dial("tcp", gw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	cert := gw.Cert("ok", pki.RoleAgent)
	if err := gw.Probe(gw.ClientConfig(&cert)); err != nil {
		t.Fatalf("a stalled handshake blocks others: %v", err)
	}
	took, err := readUntilClosed(stalled, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	if took < 200*time.Millisecond || took > 3*time.Second {
		t.Errorf("stalled handshake closed after %v, want about 300ms", took)
	}
}

func TestOversizedAndMalformedMessages(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t, func(o *server.GatewayOptions) { o.MaxMessageBytes = 64 << 10 })
	cert := gw.Cert("sender", pki.RoleAgent)

	t.Run("malformed JSON", func(t *testing.T) {
		c, err := gw.Dial(gw.ClientConfig(&cert))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(waitLimit))
		fmt.Fprintln(c, `{"jsonrpc":"2.0","id":1,"method":`)
		line, err := r.ReadString('\n')
		if err != nil || !strings.Contains(line, "-32700") {
			t.Fatalf("malformed JSON answered %q (%v), want a -32700 parse error", line, err)
		}
		fmt.Fprintln(c, `{"jsonrpc":"2.0","id":2,"method":"ping"}`)
		if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, `"id":2`) {
			t.Fatalf("session unusable after a parse error: %q %v", line, err)
		}
	})
	t.Run("over the cap", func(t *testing.T) {
		c, err := gw.Dial(gw.ClientConfig(&cert))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(waitLimit))
		go func() {
			big := `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("x", 256<<10) + `"}}` + "\n"
			c.Write([]byte(big))
		}()
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.Contains(line, "limit") {
			t.Errorf("oversized message answered %q, want an error naming the limit", line)
		}
		if _, err := readUntilClosed(c, waitLimit); err != nil {
			t.Fatal(err)
		}
	})
}

func pingOn(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintln(c, `{"jsonrpc":"2.0","id":1,"method":"ping"}`); err != nil {
		return err
	}
	_, err := bufio.NewReader(c).ReadString('\n')
	return err
}

// waitFor polls cond until it holds or the wait limit passes; it is for
// counters the gateway updates asynchronously after a peer vanishes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }
