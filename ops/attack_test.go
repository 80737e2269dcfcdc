package ops_test

import (
	"crypto/x509/pkix"
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

// TestAttackRenewRacesRevocation: an operator revokes a stolen
// certificate while the thief's renewal of it is between checkRenew and
// Issue. The renewal completes and hands the thief a valid successor of a
// revoked certificate; nothing revokes it afterwards (the chain rule only
// runs on the next renewal, and revocation does not cascade to
// successors).
func TestAttackRenewRacesRevocation(t *testing.T) {
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
	res, err := svc.Renew(t.Context(), actorOf(t, stolen), ops.RenewRequest{CSRPEM: csr})
	if err != nil {
		return // refused: fixed
	}
	list, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Serial == res.Serial && c.State == pki.StateActive {
			t.Fatalf("certificate %s was revoked during its renewal, yet its successor %s is active", stolen.Serial, res.Serial)
		}
	}
}

// TestAttackSupersededAncestorWinsChain: the chain rule's own revocation
// races a renewal the same way. A renewed to B (the bridge keeps A valid);
// A renews again while B renews to C. B's renewal revokes A as superseded
// in the middle of A's, yet A's completes: it issues B2 from a revoked
// certificate and its supersede then revokes B and C, the chain's newest.
func TestAttackSupersededAncestorWinsChain(t *testing.T) {
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
	if err != nil {
		return // refused: fixed
	}
	state := map[string]pki.CertState{}
	list, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		state[e.Serial] = e.State
	}
	t.Logf("A %s, B %s, C %s, B2 (renewed from A) %s", state[a.Serial], state[b.Serial], state[c.Serial], state[b2.Serial])
	if state[a.Serial] != pki.StateActive && state[b2.Serial] == pki.StateActive {
		t.Errorf("A was revoked (superseded) during its renewal, yet its successor B2 is active")
	}
	if state[c.Serial] != pki.StateActive {
		t.Errorf("C, the chain's newest certificate, was revoked by the renewal of its revoked ancestor")
	}
}
