package ops_test

import (
	"crypto/x509/pkix"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/audit"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
	"path/filepath"
)

// hookClock runs hook once, the first time Now is called from inside
// pki.(*Store).Issue: between checkRenew's revocation check and the
// issuance it guards.
type hookClock struct {
	mu   sync.Mutex
	hook func()
}

func (c *hookClock) Now() time.Time {
	c.mu.Lock()
	h := c.hook
	if h != nil {
		pcs := make([]uintptr, 32)
		n := runtime.Callers(2, pcs)
		fr := runtime.CallersFrames(pcs[:n])
		in := false
		for {
			f, more := fr.Next()
			if strings.Contains(f.Function, "pki.(*Store).Issue") {
				in = true
			}
			if !more {
				break
			}
		}
		if !in {
			h = nil
		} else {
			c.hook = nil
		}
	}
	c.mu.Unlock()
	if h != nil {
		h()
	}
	return time.Now()
}

// TestRevokedDuringRenewalYieldsNoSuccessor: an operator revokes a stolen
// certificate while the thief's renewal of it is between checkRenew and
// Issue. The renewal is refused and the successor it issued is revoked,
// so no valid certificate descends from a revoked one (issue 13, attack
// item 3; before the fix the successor stayed active).
func TestRevokedDuringRenewalYieldsNoSuccessor(t *testing.T) {
	t.Parallel()
	clk := &hookClock{}
	store := pkitest.NewStore(t, pki.WithClock(clk))
	trail, err := audit.Open(filepath.Join(t.TempDir(), "audit"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	svc := &ops.Service{Store: store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml"), Audit: ops.Shared(trail)}

	stolen := pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour)
	clk.mu.Lock()
	clk.hook = func() {
		if _, err := svc.Revoke(t.Context(), operator, ops.RevokeRequest{Serial: stolen.Serial, Reason: "key compromise"}); err != nil {
			t.Errorf("operator revoke: %v", err)
		}
	}
	clk.mu.Unlock()
	csr, _ := pkitest.CSR(t, pkix.Name{})
	_, err = svc.Renew(t.Context(), actorOf(t, stolen), ops.RenewRequest{CSRPEM: csr})
	if !errors.Is(err, ops.ErrPermission) || !strings.Contains(err.Error(), "revoked during its renewal") {
		t.Errorf("renewal of a certificate revoked meanwhile: err = %v, want a permission error saying so", err)
	}
	list, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	successors := 0
	for _, c := range list {
		if c.Renews != stolen.Serial {
			continue
		}
		successors++
		if c.State != pki.StateRevoked {
			t.Errorf("certificate %s was revoked during its renewal, yet its successor %s is %s", stolen.Serial, c.Serial, c.State)
		}
	}
	if successors != 1 {
		t.Errorf("%d successors recorded; want the one issued and withdrawn", successors)
	}
}

// TestSupersededAncestorCannotForkChain: the chain rule's own revocation
// races a renewal the same way. A renewed to B (the bridge keeps A valid);
// A renews again while B renews to C. B's renewal revokes A as superseded
// in the middle of A's: A's renewal is refused, its B2 withdrawn, and C,
// the chain's newest, stays active (issue 13, attack item 3; before the
// fix B2 was active and B and C revoked). Afterwards A, whose successor
// has renewed, may not renew at all.
func TestSupersededAncestorCannotForkChain(t *testing.T) {
	t.Parallel()
	clk := &hookClock{}
	store := pkitest.NewStore(t, pki.WithClock(clk))
	trail, err := audit.Open(filepath.Join(t.TempDir(), "audit"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	svc := &ops.Service{Store: store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml"), Audit: ops.Shared(trail)}
	renew := func(from *pki.Issued) (*pki.Issued, error) {
		csr, _ := pkitest.CSR(t, pkix.Name{})
		res, err := svc.Renew(t.Context(), actorOf(t, from), ops.RenewRequest{CSRPEM: csr})
		return res.Issued, err
	}
	a := pkitest.Issue(t, store, "bot", pki.RoleAgent, time.Hour)
	b, err := renew(a)
	if err != nil {
		t.Fatal(err)
	}
	var c *pki.Issued
	clk.mu.Lock()
	clk.hook = func() {
		var err error
		if c, err = renew(b); err != nil {
			t.Errorf("B renews to C: %v", err)
		}
	}
	clk.mu.Unlock()
	b2, err := renew(a)
	if !errors.Is(err, ops.ErrPermission) {
		t.Errorf("A's renewal racing B's: err = %v, want a permission error", err)
	}
	state := map[string]pki.CertState{}
	var withdrawn []string
	list, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		state[e.Serial] = e.State
		if e.Renews == a.Serial && e.Serial != b.Serial {
			withdrawn = append(withdrawn, e.Serial)
			if e.State == pki.StateActive {
				t.Errorf("A was revoked (superseded) during its renewal, yet its successor %s is active", e.Serial)
			}
		}
	}
	t.Logf("A %s, B %s, C %s, B2 (renewed from A) %v, returned %v", state[a.Serial], state[b.Serial], state[c.Serial], withdrawn, b2 != nil)
	if len(withdrawn) != 1 {
		t.Errorf("A's renewal recorded %d successors besides B; want the one issued and withdrawn", len(withdrawn))
	}
	if state[c.Serial] != pki.StateActive {
		t.Errorf("C, the chain's newest certificate, was revoked by the renewal of its revoked ancestor")
	}
	// B, C's direct predecessor, may still renew (the bridge's retry when
	// C's answer was lost); D then supersedes C.
	if _, err := renew(b); err != nil {
		t.Errorf("B, the newest certificate's predecessor, may renew (lost-answer retry): %v", err)
	}
}

// TestAncestorOfRenewedSuccessorCannotRenew: A renewed to B and B to C
// (recorded straight in the store, so the chain rule did not revoke A); A
// may not renew, since its successor has renewed: only the newest
// certificate and its direct predecessor may (issue 13, attack item 3).
func TestAncestorOfRenewedSuccessorCannotRenew(t *testing.T) {
	t.Parallel()
	store := pkitest.NewStore(t)
	svc := &ops.Service{Store: store, ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml")}
	issue := func(renews string) *pki.Issued {
		iss, err := store.Issue(pki.IssueRequest{Name: "bot", Role: pki.RoleAgent, Duration: time.Hour, Renews: renews})
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	a := issue("")
	b := issue(a.Serial)
	issue(b.Serial)
	csr, _ := pkitest.CSR(t, pkix.Name{})
	_, err := svc.Renew(t.Context(), actorOf(t, a), ops.RenewRequest{CSRPEM: csr})
	if !errors.Is(err, ops.ErrPermission) || !strings.Contains(err.Error(), "has renewed since") {
		t.Fatalf("A renewed although its successor B has renewed: %v", err)
	}
	csr, _ = pkitest.CSR(t, pkix.Name{})
	if _, err := svc.Renew(t.Context(), actorOf(t, b), ops.RenewRequest{CSRPEM: csr}); err != nil {
		t.Errorf("B, the newest certificate's predecessor, may renew: %v", err)
	}
}
