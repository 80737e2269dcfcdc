package tools_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
	"github.com/nefia/nefia/tools"
)

func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// newPair is the TLS key pair of a renewed certificate and its CSR's key.
func newPair(t *testing.T, certPEM string, key *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair([]byte(certPEM), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// TestRenewToolOverGateway: an agent renews its own certificate over real
// mTLS with the default policy. A CSR asking for CN=ops OU=operator gets
// the agent's name and role; the new certificate connects; the old one
// still does; the inventory and the audit trail record the renewal.
func TestRenewToolOverGateway(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	old := gw.Issue("bot", pki.RoleAgent, 2*time.Hour)
	c := gw.Client(pkitest.KeyPair(t, old))
	csr, key := pkitest.CSR(t, pkix.Name{CommonName: "ops", OrganizationalUnit: []string{"operator"}})
	out := servertest.CallOK(t, c, tools.NameRenew, map[string]any{"csr_pem": string(csr)})
	if out["name"] != "bot" || out["role"] != "agent" || out["renews"] != old.Serial || out["serial"] == old.Serial || out["previous_revoked"] != false {
		t.Fatalf("renew = %v", out)
	}
	nb, _ := time.Parse(time.RFC3339, out["not_before"].(string))
	na, _ := time.Parse(time.RFC3339, out["not_after"].(string))
	if got, want := na.Sub(nb), old.NotAfter.Sub(old.NotBefore); got != want {
		t.Errorf("lifetime %s, want %s", got, want)
	}
	kp := newPair(t, out["certificate_pem"].(string), key)
	st := servertest.CallOK(t, gw.Client(kp), tools.NameStatus, nil)
	if caller, _ := st["caller"].(map[string]any); caller["serial"] != out["serial"] || caller["role"] != "agent" || caller["name"] != "bot" {
		t.Errorf("caller with the renewed certificate = %v", st["caller"])
	}
	if err := gw.Probe(gw.ClientConfig(new(pkitest.KeyPair(t, old)))); err != nil {
		t.Errorf("the renewed certificate was refused without revoke_previous: %v", err)
	}
	entry, ok, err := gw.Store.Lookup(out["serial"].(string))
	if err != nil || !ok || entry.Renews != old.Serial {
		t.Errorf("inventory: %+v %v %v", entry, ok, err)
	}
	found := false
	for _, r := range gw.AuditRecords() {
		if r.Event == audit.EventRenew && r.Outcome == audit.OutcomeOK && r.Agent != nil && r.Agent.Serial == old.Serial {
			found = true
		}
	}
	if !found {
		t.Error("no ok mtls.renew record by the old serial")
	}
	gw.VerifyAudit()
}

// TestRenewToolRevokePrevious: revoke_previous revokes the connection's
// own certificate (reason "renewed") and new handshakes with it fail. The
// revocation poll runs every 2 ms, so it sees the revocation while the
// renewing call is still running: the revoked session must still deliver
// that call's answer (StreamSession.Finish), or the agent would be locked
// out with its old certificate revoked and the new one lost.
func TestRenewToolRevokePrevious(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t, func(o *server.GatewayOptions) { o.RevocationPoll = 2 * time.Millisecond })
	old := gw.Issue("bot", pki.RoleAgent, time.Hour)
	oldPair := pkitest.KeyPair(t, old)
	c := gw.Client(oldPair)
	csr, key := pkitest.CSR(t, pkix.Name{})
	out := servertest.CallOK(t, c, tools.NameRenew, map[string]any{"csr_pem": string(csr), "revoke_previous": true})
	if out["previous_revoked"] != true {
		t.Fatalf("renew = %v", out)
	}
	revs, err := gw.Store.Revocations()
	if err != nil || len(revs) != 1 || revs[0].Serial != old.Serial || revs[0].Reason != "renewed" {
		t.Fatalf("revocations = %+v, %v", revs, err)
	}
	if err := gw.Probe(gw.ClientConfig(&oldPair)); err == nil {
		t.Error("the previous certificate still connects after revoke_previous")
	}
	if err := gw.Probe(gw.ClientConfig(new(newPair(t, out["certificate_pem"].(string), key)))); err != nil {
		t.Errorf("the renewed certificate is refused: %v", err)
	}
}

// TestRenewToolRefusals: over a real gateway, every refusal leaves the
// inventory as it was. The serial renewed is the connection's: the tool
// takes no serial argument, so naming another certificate is refused.
func TestRenewToolRefusals(t *testing.T) {
	t.Parallel()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := pkitest.CSR(t, pkix.Name{})
	tests := []struct {
		name string
		args map[string]any
		want string
	}{
		{name: "P-384", args: map[string]any{"csr_pem": string(pkitest.CSRWithKey(t, p384, pkix.Name{}))}, want: `argument "csr_pem"`},
		{name: "Ed25519", args: map[string]any{"csr_pem": string(pkitest.CSRWithKey(t, ed, pkix.Name{}))}, want: `argument "csr_pem"`},
		{name: "bad signature", args: map[string]any{"csr_pem": string(pkitest.BadSignatureCSR(t))}, want: `argument "csr_pem"`},
		{name: "missing", args: map[string]any{}, want: `"csr_pem" is required`},
		{name: "someone else's serial", args: map[string]any{"csr_pem": string(good), "serial": "OTHER"}, want: "serial"},
	}
	gw := servertest.Start(t)
	other := gw.Issue("ops", pki.RoleOperator, time.Hour)
	bot := gw.Issue("bot", pki.RoleAgent, time.Hour)
	c := gw.Client(pkitest.KeyPair(t, bot))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.args["serial"] == "OTHER" {
				tt.args["serial"] = other.Serial
			}
			before, _ := gw.Store.List()
			res := servertest.CallTool(t, c, tools.NameRenew, tt.args)
			if !res.IsError || !strings.Contains(resultText(res), tt.want) {
				t.Fatalf("result %v %q, want a refusal containing %q", res.IsError, resultText(res), tt.want)
			}
			if after, _ := gw.Store.List(); len(after) != len(before) {
				t.Errorf("a refused renewal issued %d certificate(s)", len(after)-len(before))
			}
		})
	}
}

// TestRenewRefusedForRevokedAndExpired: a revoked or expired certificate
// never reaches the tool (the gateway refuses its handshake); the
// operation's own checks are in ops' TestRenewRefusals.
func TestRenewRefusedForRevokedAndExpired(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	revoked := gw.Issue("lost", pki.RoleAgent, time.Hour)
	if _, err := gw.Store.Revoke(revoked.Serial, "lost"); err != nil {
		t.Fatal(err)
	}
	caCert, caKey := pkitest.LoadCA(t, gw.Store)
	expired := pkitest.SignLeaf(t, caCert, caKey, pkitest.Leaf{CN: "old", OU: "agent",
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for name, kp := range map[string]tls.Certificate{"revoked": pkitest.KeyPair(t, revoked), "expired": expired} {
		if err := gw.Probe(gw.ClientConfig(&kp)); err == nil {
			t.Errorf("%s certificate admitted", name)
		}
	}
}

// TestIssueClientReissueReportsAndRevokesPrevious: over a real gateway, an
// operator re-issuing a name is told which earlier certificates stay
// active (previous_active), and revoke_previous revokes them, closing
// their live sessions (issue 13 item 5).
func TestIssueClientReissueReportsAndRevokesPrevious(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	first := gw.Issue("bot", pki.RoleAgent, time.Hour)
	victim := gw.Client(pkitest.KeyPair(t, first))
	out := servertest.CallOK(t, op, tools.NameIssueClient, map[string]any{"name": "bot", "force": true})
	if prev, _ := out["previous_active"].([]any); len(prev) != 1 || prev[0] != first.Serial {
		t.Fatalf("previous_active = %v, want [%s]", out["previous_active"], first.Serial)
	}
	second := out["serial"].(string)
	out = servertest.CallOK(t, op, tools.NameIssueClient, map[string]any{"name": "bot", "force": true, "revoke_previous": true})
	prev, _ := out["previous_revoked"].([]any)
	if len(prev) != 2 || prev[0] != first.Serial || prev[1] != second || out["previous_active"] != nil {
		t.Fatalf("previous_revoked = %v, previous_active = %v; want [%s %s] and none", out["previous_revoked"], out["previous_active"], first.Serial, second)
	}
	for _, s := range []string{first.Serial, second} {
		if c, _, _ := gw.Store.Lookup(s); c.State != pki.StateRevoked {
			t.Errorf("%s is %s, want revoked", s, c.State)
		}
	}
	req := mcp.CallToolRequest{}
	req.Params.Name = tools.NameStatus
	if _, err := victim.CallTool(t.Context(), req); err == nil {
		t.Error("the revoked certificate's live session still answers")
	}
}

// TestRenewServerUnderLiveSession: an operator replaces the server
// certificate over a live mTLS session; the session keeps working, a new
// handshake sees the new certificate (same CA, new serial, new SANs), and
// agents are refused the tool by the default policy (issue 13 item 3).
func TestRenewServerUnderLiveSession(t *testing.T) {
	t.Parallel()
	gw := servertest.Start(t)
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	before := gw.Store.Status().Server
	out := servertest.CallOK(t, op, tools.NameRenewServer, map[string]any{"hosts": []string{"127.0.0.1", "gw.example.test"}})
	srv, _ := out["server"].(map[string]any)
	serial, _ := srv["serial"].(string)
	if serial == "" || serial == before.Serial || out["previous_serial"] != before.Serial {
		t.Fatalf("renew_server = %v, previous %s", out, before.Serial)
	}
	// The live session continues.
	servertest.CallOK(t, op, tools.NameStatus, nil)
	// A new handshake presents the new certificate once the reloader has
	// seen the files.
	deadline := time.Now().Add(10 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		conn, err := gw.Dial(gw.ClientConfig(new(gw.Cert("probe", pki.RoleAgent))))
		if err != nil {
			t.Fatal(err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		got = pki.FormatSerial(leaf.SerialNumber)
		conn.Close()
		if got == serial {
			if !slices.Contains(leaf.DNSNames, "gw.example.test") {
				t.Errorf("new certificate's DNS names %v", leaf.DNSNames)
			}
			break
		}
		runtime.Gosched()
	}
	if got != serial {
		t.Fatalf("new handshakes present serial %s, want %s", got, serial)
	}
	servertest.CallOK(t, op, tools.NameStatus, nil)
	agent := gw.Client(gw.Cert("bot", pki.RoleAgent))
	if res := servertest.CallTool(t, agent, tools.NameRenewServer, nil); !res.IsError {
		t.Error("an agent renewed the server certificate")
	}
}
