package ops_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// actorOf is the identity the gateway would build from iss's certificate.
func actorOf(t *testing.T, iss *pki.Issued) identity.Agent {
	t.Helper()
	b, _ := pem.Decode(iss.CertPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	a, err := identity.FromCertificate(c)
	if err != nil {
		t.Fatal(err)
	}
	a.Transport = identity.TransportStream
	return a
}

func parseCertPEM(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRenewKeepsNameRoleAndLifetime: the new certificate has the caller's
// name and role whatever the CSR's subject says (OU=operator from an agent
// is ignored), a new serial, the original lifetime and the CSR's key; the
// inventory records the serial it renews, and the old one stays active.
func TestRenewKeepsNameRoleAndLifetime(t *testing.T) {
	t.Parallel()
	svc, trail := newService(t, false)
	old := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, 2*time.Hour)
	csr, key := pkitest.CSR(t, pkix.Name{CommonName: "someone-else", OrganizationalUnit: []string{"operator"}})
	res, err := svc.Renew(t.Context(), actorOf(t, old), ops.RenewRequest{CSRPEM: csr})
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "bot" || res.Role != pki.RoleAgent || res.Serial == old.Serial || res.Renews != old.Serial || res.PreviousRevoked {
		t.Fatalf("renewed = %+v", res.IssuedCert)
	}
	if got, want := res.NotAfter.Sub(res.NotBefore), old.NotAfter.Sub(old.NotBefore); got != want {
		t.Errorf("lifetime %s, want the original %s", got, want)
	}
	c := parseCertPEM(t, res.CertPEM)
	if c.Subject.CommonName != "bot" || len(c.Subject.OrganizationalUnit) != 1 || c.Subject.OrganizationalUnit[0] != "agent" {
		t.Errorf("subject = %v, want CN=bot OU=agent", c.Subject)
	}
	if !key.PublicKey.Equal(c.PublicKey) {
		t.Error("the new certificate does not certify the CSR's key")
	}
	if res.KeyPEM != nil {
		t.Error("a renewal generated a key")
	}
	entry, ok, err := svc.Store.Lookup(res.Serial)
	if err != nil || !ok || entry.Renews != old.Serial {
		t.Errorf("inventory entry %+v, %v, %v: want renews=%s", entry, ok, err, old.Serial)
	}
	if prev, _, _ := svc.Store.Lookup(old.Serial); prev.State != pki.StateActive {
		t.Errorf("previous certificate is %s, want active", prev.State)
	}
	recs := records(t, trail)
	last := recs[len(recs)-1]
	if last.Event != audit.EventRenew || last.Outcome != audit.OutcomeOK || last.Agent == nil || last.Agent.Serial != old.Serial {
		t.Errorf("last audit record = %+v, want an ok %s by %s", last, audit.EventRenew, old.Serial)
	}
}

// TestRenewLifetimeCappedByMaxDuration: a 2h certificate renews for 1h
// when mcp.mtls.client_max_duration has since been lowered to 1h.
func TestRenewLifetimeCappedByMaxDuration(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, false)
	if err := os.WriteFile(svc.ConfigPath, []byte("version: 1\nmcp:\n  mtls:\n    client_max_duration: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, 2*time.Hour)
	csr, _ := pkitest.CSR(t, pkix.Name{})
	res, err := svc.Renew(t.Context(), actorOf(t, old), ops.RenewRequest{CSRPEM: csr})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.NotAfter.Sub(res.NotBefore); got != time.Hour+time.Minute {
		t.Errorf("lifetime %s, want 1h (+1m backdating)", got)
	}
}

// TestRenewRevokePrevious revokes the renewed serial through Revoke, with
// reason "renewed", audited as mtls.revoke after mtls.renew.
func TestRenewRevokePrevious(t *testing.T) {
	t.Parallel()
	svc, trail := newService(t, false)
	old := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, time.Hour)
	csr, _ := pkitest.CSR(t, pkix.Name{})
	res, err := svc.Renew(t.Context(), actorOf(t, old), ops.RenewRequest{CSRPEM: csr, RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.PreviousRevoked {
		t.Fatal("previous_revoked false")
	}
	revs, err := svc.Store.Revocations()
	if err != nil || len(revs) != 1 || revs[0].Serial != old.Serial || revs[0].Reason != ops.RenewReason {
		t.Fatalf("revocations = %+v, %v", revs, err)
	}
	renewAt, revokeAt := -1, -1
	for i, r := range records(t, trail) {
		switch {
		case r.Event == audit.EventRenew && r.Outcome == audit.OutcomeOK:
			renewAt = i
		case r.Event == audit.EventRevoke && r.Outcome == audit.OutcomeOK && r.Args["serial"] == old.Serial:
			revokeAt = i
		}
	}
	if renewAt < 0 || revokeAt < renewAt {
		t.Errorf("audit: renew at %d, revoke of %s at %d; want the revocation recorded after the renewal", renewAt, old.Serial, revokeAt)
	}
}

// TestRenewRefusals: every renewal that must not happen, before anything
// is issued.
func TestRenewRefusals(t *testing.T) {
	t.Parallel()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := pkitest.CSR(t, pkix.Name{})
	tests := []struct {
		name  string
		csr   []byte
		actor func(t *testing.T, svc *ops.Service, clock *pkitest.Clock) identity.Agent
		is    error
		field string
	}{
		{name: "local operator has no certificate", csr: good, is: ops.ErrNoCertificate,
			actor: func(*testing.T, *ops.Service, *pkitest.Clock) identity.Agent {
				return identity.LocalOperator(identity.TransportCLI)
			}},
		{name: "revoked", csr: good, is: ops.ErrPermission,
			actor: func(t *testing.T, svc *ops.Service, _ *pkitest.Clock) identity.Agent {
				iss := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, time.Hour)
				if _, err := svc.Store.Revoke(iss.Serial, "lost"); err != nil {
					t.Fatal(err)
				}
				return actorOf(t, iss)
			}},
		{name: "expired", csr: good, is: ops.ErrPermission,
			actor: func(t *testing.T, svc *ops.Service, clock *pkitest.Clock) identity.Agent {
				iss := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, time.Hour)
				clock.Advance(time.Hour + time.Second)
				return actorOf(t, iss)
			}},
		{name: "P-384 CSR", csr: pkitest.CSRWithKey(t, p384, pkix.Name{}), is: pki.ErrInvalidCSR, field: ops.FieldCSR},
		{name: "Ed25519 CSR", csr: pkitest.CSRWithKey(t, ed, pkix.Name{}), is: pki.ErrInvalidCSR, field: ops.FieldCSR},
		{name: "bad signature", csr: pkitest.BadSignatureCSR(t), is: pki.ErrInvalidCSR, field: ops.FieldCSR},
		{name: "not PEM", csr: []byte("hello"), is: pki.ErrInvalidCSR, field: ops.FieldCSR},
		{name: "empty", csr: nil, is: pki.ErrInvalidCSR, field: ops.FieldCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := pkitest.NewClock(time.Now())
			svc, trail := newService(t, false)
			svc.Store = pki.NewStore(svc.Store.Dir(), pki.WithClock(clock))
			var actor identity.Agent
			if tt.actor != nil {
				actor = tt.actor(t, svc, clock)
			} else {
				actor = actorOf(t, pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, time.Hour))
			}
			before, _ := svc.Store.List()
			nrec := len(records(t, trail))
			_, err := svc.Renew(t.Context(), actor, ops.RenewRequest{CSRPEM: tt.csr})
			if !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %v", err, tt.is)
			}
			var in *ops.InputError
			if tt.field != "" && (!errors.As(err, &in) || in.Field != tt.field) {
				t.Errorf("err = %v, want an input error on %s", err, tt.field)
			}
			after, _ := svc.Store.List()
			if len(after) != len(before) {
				t.Errorf("%d certificates issued by a refused renewal", len(after)-len(before))
			}
			if n := len(records(t, trail)); n != nrec {
				t.Errorf("%d audit records for a refusal before any action", n-nrec)
			}
		})
	}
}

// TestIssueRevokePreviousIsForOperators: an agent that a policy lets issue
// certificates still cannot revoke a name's earlier certificates (an
// operator's, say) through revoke_previous.
func TestIssueRevokePreviousIsForOperators(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, false)
	victim := pkitest.Issue(t, svc.Store, "ops", pki.RoleOperator, time.Hour)
	bot := actorOf(t, pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, time.Hour))
	_, err := svc.Issue(t.Context(), bot, ops.IssueRequest{Name: "ops", OutDir: svc.Store.Path(pki.ClientsDir), RevokePrevious: true})
	if !errors.Is(err, ops.ErrPermission) {
		t.Fatalf("err = %v, want ErrPermission", err)
	}
	if c, _, _ := svc.Store.Lookup(victim.Serial); c.State != pki.StateActive {
		t.Errorf("the operator's certificate is %s", c.State)
	}
}

// TestRenewTwiceKeepsOneSuccessor (issue 13): a certificate that renews
// again, as the bridge does when a renewal's answer was lost, gets a new
// successor and the previous one is revoked (reason superseded), so a
// chain never holds more than the renewing certificate and its newest
// successor; renewing from the successor revokes what is left before it.
func TestRenewTwiceKeepsOneSuccessor(t *testing.T) {
	t.Parallel()
	svc, trail := newService(t, false)
	old := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, time.Hour)
	renew := func(from *pki.Issued) *pki.Issued {
		t.Helper()
		csr, _ := pkitest.CSR(t, pkix.Name{})
		res, err := svc.Renew(t.Context(), actorOf(t, from), ops.RenewRequest{CSRPEM: csr})
		if err != nil {
			t.Fatal(err)
		}
		return res.Issued
	}
	active := func() []string {
		t.Helper()
		list, err := svc.Store.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range list {
			if c.State == pki.StateActive {
				out = append(out, c.Serial)
			}
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }

	lost := renew(old)
	kept := renew(old) // the retry after a lost answer
	if got, want := active(), sorted(old.Serial, kept.Serial); !slices.Equal(got, want) {
		t.Errorf("after renewing twice: active %v, want the renewing certificate and its newest successor %v", got, want)
	}
	again := renew(old)
	if got, want := active(), sorted(old.Serial, again.Serial); !slices.Equal(got, want) {
		t.Errorf("after renewing three times: active %v, want %v", got, want)
	}
	next := renew(again) // the chain moves on: old is neither renewing nor newest
	if got, want := active(), sorted(again.Serial, next.Serial); !slices.Equal(got, want) {
		t.Errorf("after renewing the successor: active %v, want %v", got, want)
	}
	revs, err := svc.Store.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, r := range revs {
		reasons[r.Serial] = r.Reason
	}
	for _, s := range []string{lost.Serial, kept.Serial, old.Serial} {
		if reasons[s] != ops.SupersededReason {
			t.Errorf("%s revoked with reason %q, want %q", s, reasons[s], ops.SupersededReason)
		}
	}
	audited := 0
	for _, r := range records(t, trail) {
		if r.Event == audit.EventRevoke && r.Outcome == audit.OutcomeOK && r.Args["reason"] == ops.SupersededReason {
			audited++
		}
	}
	if audited != 3 {
		t.Errorf("%d superseded revocations in the audit trail, want 3", audited)
	}
	// Another certificate of the same name, issued by an operator, is not
	// part of the chain and is left alone.
	other := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, time.Hour)
	renew(next)
	if !slices.Contains(active(), other.Serial) {
		t.Errorf("a renewal revoked %s, which is not of its chain", other.Serial)
	}
}
