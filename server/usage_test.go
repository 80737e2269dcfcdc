package server_test

import (
	"crypto/x509"
	"testing"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/server"
	"github.com/nefia/nefia/server/servertest"
)

// TestClientAuthUsageRequired (issue 10, item 15): a client certificate must
// name clientAuth among its extended key usages. crypto/x509 treats a leaf
// with no extended key usage at all, or with "any", as valid for every
// usage, so verification asking for clientAuth alone let such a leaf in.
func TestClientAuthUsageRequired(t *testing.T) {
	noLeaks(t)
	gw := servertest.Start(t)
	caCert, caKey := pkitest.LoadCA(t, gw.Store)
	tests := []struct {
		name  string
		eku   []x509.ExtKeyUsage
		admit bool
	}{
		{name: "clientAuth", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, admit: true},
		{name: "clientAuth and serverAuth", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, admit: true},
		{name: "no extended key usage", eku: []x509.ExtKeyUsage{}},
		{name: "any usage", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}},
		{name: "serverAuth only", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := pkitest.SignLeaf(t, caCert, caKey, pkitest.Leaf{CN: "eku", OU: "agent", EKU: tt.eku})
			if len(tt.eku) == 0 && len(cert.Leaf.ExtKeyUsage) != 0 {
				t.Fatalf("test certificate has usages %v, want none", cert.Leaf.ExtKeyUsage)
			}
			before := len(gw.AuditRecords())
			err := gw.Probe(gw.ClientConfig(&cert))
			if tt.admit {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("admitted")
			}
			var reason string
			waitFor(t, func() bool {
				for _, r := range gw.AuditRecords()[before:] {
					if r.Event == audit.EventConnectionRejected {
						reason = r.Reason
						return true
					}
				}
				return false
			})
			if reason != server.ReasonBadUsage {
				t.Errorf("refused for %q, want %q", reason, server.ReasonBadUsage)
			}
		})
	}
}
