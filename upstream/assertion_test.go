package upstream_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/upstream"
)

// TestLoadSignerCreatesKeyOnce: the first use creates the key (0600) and
// its public half (0644); concurrent and later loads share that one key.
func TestLoadSignerCreatesKeyOnce(t *testing.T) {
	t.Parallel()
	store := pki.NewStore(t.TempDir())
	var wg sync.WaitGroup
	pems := make([]string, 8)
	for i := range pems {
		wg.Go(func() {
			s, err := upstream.LoadSigner(store)
			if err != nil {
				t.Error(err)
				return
			}
			p, _ := s.PublicKeyPEM()
			pems[i] = string(p)
		})
	}
	wg.Wait()
	for _, p := range pems[1:] {
		if p != pems[0] {
			t.Fatal("concurrent LoadSigner calls created different keys")
		}
	}
	for name, want := range map[string]os.FileMode{upstream.KeyFile: 0o600, upstream.PubFile: 0o644} {
		fi, err := os.Stat(store.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", name, fi.Mode().Perm(), want)
		}
	}
	pub, _ := os.ReadFile(store.Path(upstream.PubFile))
	if string(pub) != pems[0] {
		t.Error("published public key differs from the signer's")
	}
	if err := os.Remove(store.Path(upstream.PubFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := upstream.LoadSigner(store); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(store.Path(upstream.PubFile)); string(again) != pems[0] {
		t.Error("a deleted public key file was not published again from the key")
	}
	if err := os.WriteFile(store.Path(upstream.KeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := upstream.LoadSigner(store); err == nil || !strings.Contains(err.Error(), upstream.KeyFile) {
		t.Errorf("LoadSigner over a corrupt key = %v, want an error naming it", err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	store := pki.NewStore(t.TempDir())
	s, err := upstream.LoadSigner(store)
	if err != nil {
		t.Fatal(err)
	}
	pemData, _ := s.PublicKeyPEM()
	pub, err := upstream.ParsePublicKeyPEM(pemData)
	if err != nil {
		t.Fatal(err)
	}
	other, err := upstream.LoadSigner(pki.NewStore(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	agent := identity.Agent{Name: "bot", Serial: "ab", Role: pki.RoleAgent, Fingerprint: "ff"}
	sign := func(s *upstream.Signer, aud string, at time.Time) string {
		tok, err := s.Sign(aud, agent, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := sign(s, "fs", now)
	parts := strings.Split(good, ".")
	tests := []struct {
		name  string
		token string
		aud   string
		at    time.Time
		want  string // "" = valid
	}{
		{name: "valid", token: good, aud: "fs", at: now},
		{name: "valid at 59s", token: good, aud: "fs", at: now.Add(59 * time.Second)},
		{name: "expired", token: good, aud: "fs", at: now.Add(66 * time.Second), want: "expired"},
		{name: "from the future", token: good, aud: "fs", at: now.Add(-time.Minute), want: "future"},
		{name: "other audience", token: good, aud: "tickets", at: now, want: "audience"},
		{name: "other key", token: sign(other, "fs", now), aud: "fs", at: now, want: "bad signature"},
		{name: "claims swapped", token: parts[0] + "." + strings.Split(sign(s, "tickets", now), ".")[1] + "." + parts[2], aud: "tickets", at: now, want: "bad signature"},
		{name: "alg none", token: "eyJhbGciOiJub25lIn0." + parts[1] + ".", aud: "fs", at: now, want: "ES256"},
		{name: "not a jws", token: "x", aud: "fs", at: now, want: "compact"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := upstream.Verify(tt.token, pub, tt.aud, tt.at)
			if tt.want == "" {
				if err != nil || c.Name != "bot" || c.Serial != "ab" || c.Role != "agent" || c.Fingerprint != "ff" || c.ExpiresAt-c.IssuedAt != 60 {
					t.Errorf("Verify = %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, upstream.ErrAssertion) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Verify = %v, want ErrAssertion about %q", err, tt.want)
			}
		})
	}
}

// An upstream written in Go verifies the assertion nefia sends in
// params._meta["io.nefia/assertion"] (or the Nefia-Assertion header) with
// the public key nefia publishes (upstream_assertion.pub, or the output of
// `nefia upstream key`) and its own name as the audience. Upstreams in
// other languages use any JWT library the same way: algorithm pinned to
// ES256, iss "nefia", aud their name, exp checked.
func ExampleVerify() {
	dir, _ := os.MkdirTemp("", "nefia-example")
	defer os.RemoveAll(dir)
	signer, _ := upstream.LoadSigner(pki.NewStore(dir)) // the gateway's side
	token, _ := signer.Sign("fs", identity.Agent{Name: "ci-build", Serial: "1f", Role: pki.RoleAgent}, time.Now())

	// The upstream's side: the published key and its own name.
	pemData, _ := os.ReadFile(dir + "/" + upstream.PubFile)
	pub, err := upstream.ParsePublicKeyPEM(pemData)
	if err != nil {
		panic(err)
	}
	claims, err := upstream.Verify(token, pub, "fs", time.Now())
	if err != nil {
		fmt.Println("refuse the call:", err)
		return
	}
	fmt.Println(claims.Name, claims.Role, claims.Audience)
	// Output: ci-build agent fs
}
