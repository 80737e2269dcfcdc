package pki_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

func TestRevocationCheckerFollowsTheStore(t *testing.T) {
	s := pkitest.NewStore(t)
	iss := pkitest.Issue(t, s, "bot", pki.RoleAgent, time.Hour)
	kp := pkitest.KeyPair(t, iss)
	cert := kp.Leaf
	c := pki.NewRevocationChecker(s.Path(pki.RevokedFile))

	if err := c.Check(cert); err != nil {
		t.Fatalf("fresh certificate: %v", err)
	}
	for range 100 {
		_ = c.Check(cert)
	}
	if c.Loads() != 1 {
		t.Fatalf("unchanged store read %d times for 101 checks, want 1", c.Loads())
	}
	if _, err := s.Revoke(iss.Serial, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(cert); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("after revoke: %v, want ErrRevoked", err)
	}

	good, _ := os.ReadFile(s.Path(pki.RevokedFile))
	tests := []struct {
		name   string
		break_ func(path string)
	}{
		{"truncated", func(p string) { os.WriteFile(p, good[:len(good)/2], 0o600) }},
		{"garbage", func(p string) { os.WriteFile(p, []byte("\x00\x01garbage"), 0o600) }},
		{"empty", func(p string) { os.WriteFile(p, nil, 0o600) }},
		{"missing", func(p string) { os.Remove(p) }},
		{"a directory", func(p string) { os.Remove(p); os.Mkdir(p, 0o700) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := s.Path(pki.RevokedFile)
			tt.break_(path)
			other := pkitest.Issue(t, s, "other", pki.RoleAgent, time.Hour)
			if err := c.Check(pkitest.KeyPair(t, other).Leaf); !errors.Is(err, pki.ErrRevocationUnavailable) {
				t.Fatalf("check with %s store = %v, want ErrRevocationUnavailable (fail closed)", tt.name, err)
			}
			os.RemoveAll(path)
			if err := os.WriteFile(path, good, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := c.Check(cert); !errors.Is(err, pki.ErrRevoked) {
				t.Fatalf("after restore: %v, want ErrRevoked", err)
			}
			if err := c.Check(pkitest.KeyPair(t, other).Leaf); err != nil {
				t.Fatalf("after restore, unrevoked cert: %v", err)
			}
		})
	}
}

func TestRevocationCheckerConcurrentWithWriters(t *testing.T) {
	s := pkitest.NewStore(t)
	c := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
	const n = 20
	issued := make([]*pki.Issued, n)
	for i := range issued {
		issued[i] = pkitest.Issue(t, s, fmt.Sprintf("c%d", i), pki.RoleAgent, time.Hour)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, iss := range issued {
					n, _ := new(big.Int).SetString(iss.Serial, 16)
					if _, err := c.IsRevoked(n); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	for _, iss := range issued {
		if _, err := s.Revoke(iss.Serial, ""); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	for _, iss := range issued {
		n, _ := new(big.Int).SetString(iss.Serial, 16)
		if ok, err := c.IsRevoked(n); !ok || err != nil {
			t.Errorf("%s: revoked=%v err=%v after all revokes", iss.Name, ok, err)
		}
	}
}

// BenchmarkRevocationCheck measures one handshake's revocation check against
// an unchanged store: one stat, a map lookup, no file read.
func BenchmarkRevocationCheck(b *testing.B) {
	for _, size := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("revoked=%d", size), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), pki.RevokedFile)
			writeStore(b, path, size)
			c := pki.NewRevocationChecker(path)
			probe, _ := pki.NewSerial() // not revoked: the common case
			if err := c.Refresh(); err != nil {
				b.Fatal(err)
			}
			if c.Len() != size {
				b.Fatalf("loaded %d serials, want %d", c.Len(), size)
			}
			loads := c.Loads()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if revoked, err := c.IsRevoked(probe); revoked || err != nil {
					b.Fatal(revoked, err)
				}
			}
			b.StopTimer()
			if c.Loads() != loads {
				b.Fatalf("the store was read %d times during the benchmark, want 0", c.Loads()-loads)
			}
		})
	}
}

func writeStore(tb testing.TB, path string, n int) {
	tb.Helper()
	type rev struct {
		Serial    string    `json:"serial"`
		RevokedAt time.Time `json:"revoked_at"`
		Name      string    `json:"name"`
	}
	revs := make([]rev, n)
	for i := range revs {
		s, err := pki.NewSerial()
		if err != nil {
			tb.Fatal(err)
		}
		revs[i] = rev{Serial: pki.FormatSerial(s), RevokedAt: time.Now().UTC(), Name: fmt.Sprintf("c%d", i)}
	}
	data, err := json.Marshal(map[string]any{"version": 1, "revoked": revs})
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// TestRevocationCheckStatsOnlyAfterAChange (issue 16 item 2): with a
// directory watch, checks against an unchanged store cost no stat (main:
// two per check, the store's and its log's); a revocation makes the very
// next check stat and see it, and a change elsewhere in the directory
// costs one stat, not a reload.
func TestRevocationCheckStatsOnlyAfterAChange(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	c := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
	if !c.Watched() {
		t.Skip("no directory watch on this platform")
	}
	victim := pkitest.Issue(t, s, "victim", pki.RoleAgent, time.Hour)
	serial, _ := new(big.Int).SetString(victim.Serial, 16)
	if err := c.Refresh(); err != nil {
		t.Fatal(err)
	}
	before := c.Statted()
	for range 1000 {
		if revoked, err := c.IsRevoked(serial); revoked || err != nil {
			t.Fatal(revoked, err)
		}
	}
	if n := c.Statted() - before; n != 0 {
		t.Fatalf("1000 checks of an unchanged store statted %d times, want 0", n)
	}
	if _, err := s.Revoke(victim.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	if revoked, err := c.IsRevoked(serial); !revoked || err != nil {
		t.Fatalf("the check right after the revocation: revoked=%v, %v", revoked, err)
	}
	loads := c.Loads()
	if err := os.WriteFile(filepath.Join(s.Dir(), "unrelated"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	before = c.Statted()
	for range 10 {
		c.IsRevoked(serial)
	}
	if n, l := c.Statted()-before, c.Loads()-loads; n != 1 || l != 0 {
		t.Fatalf("after an unrelated file changed: %d stats, %d loads, want 1 and 0", n, l)
	}
}

// TestRevocationWatchIsIdleUntilAChange (issue 16 item 1): Watch used to
// stat the store and its log every 10 ms (an idle gateway spent 2.7% of a
// core on it); with a directory watch it sleeps until the kernel reports
// a change, then delivers at once.
func TestRevocationWatchIsIdleUntilAChange(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	c := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
	if !c.Watched() {
		t.Skip("no directory watch on this platform")
	}
	victim := pkitest.Issue(t, s, "victim", pki.RoleAgent, time.Hour)
	ch := c.Watch(t.Context())
	before := c.Statted()
	// Idleness is measured over time: 300 ms is 30 rounds of the old poll.
	time.Sleep(300 * time.Millisecond)
	if n := c.Statted() - before; n > 1 {
		t.Fatalf("an idle watch statted %d times in 300 ms, want at most the first look", n)
	}
	select {
	case <-ch:
		t.Fatal("a delivery without a change")
	default:
	}
	if _, err := s.Revoke(victim.Serial, "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery after a revocation")
	}
}
