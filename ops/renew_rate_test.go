package ops_test

import (
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// TestRenewalsPerLifetimeBounded: one renewal chain is issued at most
// ops.MaxRenewalsPerLifetime certificates by renewals within one lifetime,
// whether the newest certificate renews or its predecessor retries; the
// next renewal is refused with nothing written (inventory and revocation
// store unchanged), and allowed again once the earlier renewals are more
// than a lifetime old. Before, a certificate renewing in a loop grew the
// inventory and the revocation store without limit.
func TestRenewalsPerLifetimeBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// retry renews from the predecessor of the newest (a bridge whose
		// answer was lost) instead of the newest itself.
		retry bool
	}{
		{name: "newest renews"},
		{name: "predecessor retries", retry: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc, clk := clockedService(t)
			const life = 2 * time.Hour
			renewing := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, life)
			renew := func() (*pki.Issued, error) {
				csr, _ := pkitest.CSR(t, pkix.Name{})
				res, err := svc.Renew(t.Context(), actorOf(t, renewing), ops.RenewRequest{CSRPEM: csr})
				return res.Issued, err
			}
			counts := func() (int, int) {
				t.Helper()
				list, err := svc.Store.List()
				if err != nil {
					t.Fatal(err)
				}
				revs, err := svc.Store.Revocations()
				if err != nil {
					t.Fatal(err)
				}
				return len(list), len(revs)
			}
			var newest *pki.Issued
			for i := range ops.MaxRenewalsPerLifetime {
				next, err := renew()
				if err != nil {
					t.Fatalf("renewal %d of %d refused: %v", i+1, ops.MaxRenewalsPerLifetime, err)
				}
				if newest = next; !tc.retry {
					renewing = next
				}
				clk.Advance(time.Minute)
			}
			certs, revs := counts()
			_, err := renew()
			if !errors.Is(err, ops.ErrPermission) || !strings.Contains(err.Error(), "renewals per lifetime") {
				t.Fatalf("renewal %d within one lifetime: err = %v, want a refusal naming the bound", ops.MaxRenewalsPerLifetime+1, err)
			}
			if c, r := counts(); c != certs || r != revs {
				t.Errorf("the refused renewal wrote: %d → %d certificates, %d → %d revocations", certs, c, revs, r)
			}
			// A lifetime after the first renewals, the chain may renew again,
			// from its newest certificate (still valid then).
			renewing = newest
			clk.Advance(life - time.Duration(ops.MaxRenewalsPerLifetime-2)*time.Minute)
			if _, err := renew(); err != nil {
				t.Fatalf("renewal a lifetime later refused: %v", err)
			}
		})
	}
}

// TestRenewalBoundCountsFromIssuance: the bound counts a renewal from when
// it was issued, not from its NotBefore, which issuance backdates by
// pki.Backdate (one minute) for clock skew. Before, the window lost that
// minute: one-minute certificates (config.MinClientDuration) were never
// counted, so a chain renewed any number of times, and ten renewals of a
// one-hour chain no longer counted 59 minutes later.
func TestRenewalBoundCountsFromIssuance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		life  time.Duration
		later time.Duration // from the ten renewals to the eleventh
	}{
		{name: "one-minute certificates renewing at once", life: time.Minute},
		{name: "one-hour certificates, the eleventh 59 minutes later", life: time.Hour, later: 59 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc, clk := clockedService(t)
			renewing := pkitest.Issue(t, svc.Store, "bot", pki.RoleAgent, tc.life)
			renew := func() (*pki.Issued, error) {
				csr, _ := pkitest.CSR(t, pkix.Name{})
				res, err := svc.Renew(t.Context(), actorOf(t, renewing), ops.RenewRequest{CSRPEM: csr})
				return res.Issued, err
			}
			for i := range ops.MaxRenewalsPerLifetime {
				next, err := renew()
				if err != nil {
					t.Fatalf("renewal %d of %d refused: %v", i+1, ops.MaxRenewalsPerLifetime, err)
				}
				renewing = next
			}
			clk.Advance(tc.later)
			if _, err := renew(); !errors.Is(err, ops.ErrPermission) || !strings.Contains(err.Error(), "renewals per lifetime") {
				t.Fatalf("renewal %d within one lifetime (%s): err = %v, want a refusal naming the bound", ops.MaxRenewalsPerLifetime+1, tc.life, err)
			}
		})
	}
}

// clockedService is newService with a store on a clock the test moves.
func clockedService(t *testing.T) (*ops.Service, *pkitest.Clock) {
	t.Helper()
	svc, _ := newService(t, false)
	clk := pkitest.NewClock(time.Now())
	svc.Store = pki.NewStore(svc.Store.Dir(), pki.WithClock(clk))
	return svc, clk
}
