package server

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// TestIdentifyBuildsIdentityOnce (issue 12 item 2): the per-request
// identity check of an HTTP request allocates no more than the handshake
// policy it re-runs (verifyConnection), since the identity it returns is
// the one that policy's role check builds. It built it a second time
// (serial and fingerprint formatted again: 4 more allocations per
// request).
func TestIdentifyBuildsIdentityOnce(t *testing.T) {
	s := pkitest.NewStore(t)
	pool := pkitest.CAPool(t, s)
	ca, err := newReloader("CA certificate", slog.New(slog.DiscardHandler), nil, func() (*x509.CertPool, error) { return pool, nil })
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{ca: ca}
	g.opts.Clock = pkitest.NewClock(time.Now())
	g.opts.Revocations = pki.NewRevocationChecker(s.Path(pki.RevokedFile))
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{pkitest.KeyPair(t, pkitest.Issue(t, s, "bot", pki.RoleAgent, time.Hour)).Leaf}}
	if err := g.verifyConnection(cs); err != nil {
		t.Fatal(err)
	}
	agent, err := g.identify(&cs)
	if err != nil || agent.Name != "bot" || agent.Role != pki.RoleAgent || agent.Serial == "" || agent.Fingerprint == "" {
		t.Fatalf("identify = %+v, %v", agent, err)
	}
	verify := testing.AllocsPerRun(100, func() { _ = g.verifyConnection(cs) })
	identify := testing.AllocsPerRun(100, func() { _, _ = g.identify(&cs) })
	t.Logf("allocations: verifyConnection %.0f, identify %.0f", verify, identify)
	if identify > verify {
		t.Errorf("identify allocates %.0f times, verifyConnection %.0f: the identity is built twice", identify, verify)
	}
}
