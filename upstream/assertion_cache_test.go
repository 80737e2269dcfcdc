package upstream_test

import (
	"testing"
	"time"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/upstream"
)

// TestAssertionReuse: Signer.Assertion sends the same assertion again to
// the same upstream for the same caller while it has more than
// AssertionMinRemaining to live, and signs a new one for another caller
// (any certificate field), another upstream, once the old one has 30 s or
// less left, or when the clock went back before its iat. Every assertion
// it returns verifies at the time it is returned, for the caller and
// audience asked, with more than 30 s left.
func TestAssertionReuse(t *testing.T) {
	t.Parallel()
	s, err := upstream.LoadSigner(pki.NewStore(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := s.PublicKeyPEM()
	pub, err := upstream.ParsePublicKeyPEM(pemData)
	if err != nil {
		t.Fatal(err)
	}
	bot := identity.Agent{Name: "bot", Serial: "01", Role: pki.RoleAgent, Fingerprint: "aa"}
	t0 := time.Unix(1_800_000_000, 0)
	get := func(aud string, a identity.Agent, now time.Time) string {
		t.Helper()
		tok, err := s.Assertion(aud, a, now)
		if err != nil {
			t.Fatal(err)
		}
		c, err := upstream.Verify(tok, pub, aud, now)
		if err != nil {
			t.Fatalf("assertion returned at %s does not verify: %v", now.Sub(t0), err)
		}
		if c.Name != a.Name || c.Serial != a.Serial || c.Role != string(a.Role) || c.Fingerprint != a.Fingerprint {
			t.Errorf("assertion for %+v carries %+v", a, c)
		}
		if left := time.Unix(c.ExpiresAt, 0).Sub(now); left <= upstream.AssertionMinRemaining {
			t.Errorf("assertion returned at %s has %s left, want more than %s", now.Sub(t0), left, upstream.AssertionMinRemaining)
		}
		return tok
	}
	first := get("up", bot, t0)
	tests := []struct {
		name  string
		aud   string
		agent identity.Agent
		at    time.Duration
		same  bool
	}{
		{name: "same caller and upstream, at once", aud: "up", agent: bot, at: 0, same: true},
		{name: "another session of the same certificate", aud: "up", agent: identity.Agent{Name: "bot", Serial: "01", Role: pki.RoleAgent, Fingerprint: "aa", SessionID: "s2"}, at: time.Second, same: true},
		{name: "29 s later (31 s left)", aud: "up", agent: bot, at: 29 * time.Second, same: true},
		{name: "another upstream", aud: "other", agent: bot, at: time.Second},
		{name: "another name", aud: "up", agent: identity.Agent{Name: "bot2", Serial: "01", Role: pki.RoleAgent, Fingerprint: "aa"}, at: time.Second},
		{name: "another serial", aud: "up", agent: identity.Agent{Name: "bot", Serial: "02", Role: pki.RoleAgent, Fingerprint: "aa"}, at: time.Second},
		{name: "another role", aud: "up", agent: identity.Agent{Name: "bot", Serial: "01", Role: pki.RoleOperator, Fingerprint: "aa"}, at: time.Second},
		{name: "another fingerprint", aud: "up", agent: identity.Agent{Name: "bot", Serial: "01", Role: pki.RoleAgent, Fingerprint: "bb"}, at: time.Second},
		{name: "clock went back", aud: "up", agent: bot, at: -time.Second},
	}
	for _, tt := range tests {
		if got := get(tt.aud, tt.agent, t0.Add(tt.at)); (got == first) != tt.same {
			t.Errorf("%s: reused = %v, want %v", tt.name, got == first, tt.same)
		}
	}
	// 30 s after the first (exactly 30 s left): a new one, reused in turn.
	second := get("up", bot, t0.Add(30*time.Second))
	if second == first {
		t.Error("an assertion with 30 s left was sent again")
	}
	if again := get("up", bot, t0.Add(45*time.Second)); again != second {
		t.Error("the renewed assertion was not reused")
	}
}
