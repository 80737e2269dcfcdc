package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/server/servertest"
)

// csrWithExtensions is a CSR asking for the operator role in its subject
// and for CA powers and a server name in its extensions.
func csrWithExtensions(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	basic, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "agent", OrganizationalUnit: []string{"operator"}},
		DNSNames:        []string{"gateway.example"},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: basic}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestAgentCannotEscalate has an agent certificate try every tool with
// crafted arguments (issue 7 item 9): every call is refused, nothing
// changes, and each is audited as denied.
func TestAgentCannotEscalate(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	agentCert := gw.Cert("agent", pki.RoleAgent)
	agent := gw.Client(agentCert)
	victim := gw.Issue("victim", pki.RoleOperator, time.Hour)
	csr := csrWithExtensions(t)

	tests := []struct {
		name string
		tool string
		args map[string]any
	}{
		{"operator role in the CSR subject", "nefia.mtls.issue_client", map[string]any{"name": "escalated", "csr_pem": csr}},
		{"operator role asked outright", "nefia.mtls.issue_client", map[string]any{"name": "escalated", "role": "operator"}},
		{"path trick in the name", "nefia.mtls.issue_client", map[string]any{"name": "../../etc/cron.d/x"}},
		{"out_dir outside the clients root", "nefia.mtls.issue_client", map[string]any{"name": "x", "out_dir": "/etc"}},
		{"out_dir climbing out", "nefia.mtls.issue_client", map[string]any{"name": "x", "out_dir": "../../.."}},
		{"revoke an operator", "nefia.mtls.revoke", map[string]any{"serial": victim.Serial}},
		{"replace the CA", "nefia.mtls.init", map[string]any{"hosts": []string{"evil.example"}, "force": true}},
	}
	before, _ := gw.Store.List()
	caBefore, _ := gw.Store.CACertPEM()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := len(gw.AuditRecords())
			res := servertest.CallTool(t, agent, tt.tool, tt.args)
			if !res.IsError || !strings.Contains(res.Content[0].(mcp.TextContent).Text, "permission denied") {
				t.Fatalf("agent call not refused: %+v", res.Content)
			}
			calls := toolCalls(gw.AuditRecords(), from)
			if len(calls) != 1 || calls[0].Outcome != audit.OutcomeDenied || calls[0].Agent.Serial != pki.FormatSerial(agentCert.Leaf.SerialNumber) {
				t.Errorf("audit = %+v, want one denied tool_call by the agent", calls)
			}
			for _, r := range gw.AuditRecords()[from:] {
				if r.Event != audit.EventToolCall {
					t.Errorf("a denied call left a %s record: the action was attempted", r.Event)
				}
			}
		})
	}
	after, _ := gw.Store.List()
	caAfter, _ := gw.Store.CACertPEM()
	if len(after) != len(before) || string(caAfter) != string(caBefore) {
		t.Fatal("an agent changed the state")
	}
	for _, c := range after {
		if c.State != pki.StateActive {
			t.Errorf("%s is %s after the agent's calls", c.Name, c.State)
		}
	}
}

// TestOperatorOutDirStaysUnderTheClientsRoot: even an operator cannot
// write a bundle outside the configured root, and a CSR's subject and
// extensions never reach the certificate.
func TestOperatorOutDirStaysUnderTheClientsRoot(t *testing.T) {
	gw := servertest.Start(t)
	op := gw.Client(gw.Cert("ops", pki.RoleOperator))
	for _, dir := range []string{"/tmp", "../..", "sub/../../.."} {
		res := servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "x", "out_dir": dir})
		if !res.IsError {
			t.Errorf("out_dir %q accepted", dir)
		}
	}
	res := servertest.CallTool(t, op, "nefia.mtls.issue_client", map[string]any{"name": "from-csr", "csr_pem": csrWithExtensions(t)})
	if res.IsError {
		t.Fatalf("operator CSR issuance: %+v", res.Content)
	}
	cert, err := pki.ParseCertificatePEM([]byte(servertest.Structured(t, res)["certificate_pem"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.OrganizationalUnit[0] != "agent" || cert.IsCA || len(cert.DNSNames) != 0 || cert.Subject.CommonName != "from-csr" {
		t.Errorf("CSR content leaked into the certificate: OU %v CA %v SANs %v CN %q",
			cert.Subject.OrganizationalUnit, cert.IsCA, cert.DNSNames, cert.Subject.CommonName)
	}
}
