package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// readCRLFile parses the store's CRL file and checks it is a PEM X.509 v2
// CRL signed by the store's CA.
func readCRLFile(t *testing.T, s *pki.Store) *x509.RevocationList {
	t.Helper()
	data, err := os.ReadFile(s.Path(pki.CRLFile))
	if err != nil {
		t.Fatalf("read CRL: %v", err)
	}
	b, rest := pem.Decode(data)
	if b == nil || b.Type != "X509 CRL" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("%s is not one PEM X509 CRL block:\n%s", pki.CRLFile, data)
	}
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		t.Fatalf("parse CRL: %v", err)
	}
	ca, _, err := s.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("CRL not signed by the CA: %v", err)
	}
	return crl
}

func crlSerials(crl *x509.RevocationList) []string {
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, pki.FormatSerial(e.SerialNumber))
	}
	slices.Sort(out)
	return out
}

// wantCRLMatchesStore checks the CRL lists exactly the store's serials
// with their revocation times.
func wantCRLMatchesStore(t *testing.T, s *pki.Store, crl *x509.RevocationList) {
	t.Helper()
	revs, err := s.Revocations()
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]time.Time{}
	for _, r := range revs {
		at[r.Serial] = r.RevokedAt.Truncate(time.Second)
	}
	if len(crl.RevokedCertificateEntries) != len(revs) {
		t.Fatalf("CRL lists %d serials, the store %d", len(crl.RevokedCertificateEntries), len(revs))
	}
	for _, e := range crl.RevokedCertificateEntries {
		serial := pki.FormatSerial(e.SerialNumber)
		want, ok := at[serial]
		if !ok {
			t.Errorf("CRL lists %s, which the store does not", serial)
		} else if !e.RevocationTime.Equal(want) {
			t.Errorf("CRL revocation time of %s = %v, store %v", serial, e.RevocationTime, want)
		}
	}
}

// TestCRLAfterInit: init publishes an empty CRL of the new CA (issue 13
// item 6), number 1, current for CRLValidity, world-readable.
func TestCRLAfterInit(t *testing.T) {
	t.Parallel()
	clock := pkitest.NewClock(pkitest.Epoch)
	s := pkitest.NewStore(t, pki.WithClock(clock))
	crl := readCRLFile(t, s)
	if crl.Number.Int64() != 1 || len(crl.RevokedCertificateEntries) != 0 {
		t.Errorf("CRL after init: number %v, %d entries; want 1, 0", crl.Number, len(crl.RevokedCertificateEntries))
	}
	if want := pkitest.Epoch.Add(-time.Minute); !crl.ThisUpdate.Equal(want) {
		t.Errorf("thisUpdate %v, want %v (now minus the clock skew)", crl.ThisUpdate, want)
	}
	if want := pkitest.Epoch.Add(pki.CRLValidity); !crl.NextUpdate.Equal(want) {
		t.Errorf("nextUpdate %v, want %v", crl.NextUpdate, want)
	}
	if fi, err := os.Stat(s.Path(pki.CRLFile)); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("CRL file mode %v (%v), want 0644", fi.Mode(), err)
	}

	// A forced re-init archives the old CA's CRL with the rest.
	res, err := s.Init(pki.InitOptions{Hosts: []string{"localhost"}, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(res.ArchivedTo + "/" + pki.CRLFile); err != nil {
		t.Errorf("old CRL not archived: %v", err)
	}
	if crl := readCRLFile(t, s); crl.Number.Int64() != 1 {
		t.Errorf("new CA's CRL number %v, want 1", crl.Number)
	}
}

// TestCRLFollowsRevocations: every revocation republishes the CRL with a
// higher number and exactly the store's serials.
func TestCRLFollowsRevocations(t *testing.T) {
	t.Parallel()
	clock := pkitest.NewClock(pkitest.Epoch)
	s := pkitest.NewStore(t, pki.WithClock(clock))
	last := readCRLFile(t, s).Number.Int64()
	for i, name := range []string{"a", "b", "c"} {
		iss := pkitest.Issue(t, s, name, pki.RoleAgent, time.Hour)
		clock.Advance(time.Minute)
		res, err := s.RevokeReport(iss.Serial, "test")
		if err != nil || len(res.Warnings) != 0 {
			t.Fatalf("revoke %s: %v %v", name, err, res.Warnings)
		}
		crl := readCRLFile(t, s)
		if crl.Number.Int64() <= last {
			t.Fatalf("revocation %d: CRL number %v, not above %d", i, crl.Number, last)
		}
		last = crl.Number.Int64()
		wantCRLMatchesStore(t, s, crl)
		if want := clock.Now().Add(pki.CRLValidity); !crl.NextUpdate.Equal(want) {
			t.Errorf("nextUpdate %v, want %v", crl.NextUpdate, want)
		}
	}
	// Revoking again changes nothing, the CRL included.
	revs, _ := s.Revocations()
	if _, err := s.Revoke(revs[0].Serial, ""); !errors.Is(err, pki.ErrAlreadyRevoked) {
		t.Fatal(err)
	}
	if n := readCRLFile(t, s).Number.Int64(); n != last {
		t.Errorf("revoking twice moved the CRL number from %d to %d", last, n)
	}
}

// TestCRLNumberNeverRepeats simulates a crash between the store write and
// the CRL write (the old CRL file is put back), the CRL file lost, and a
// store without the reserved number: the next CRL's number is above every
// number ever published, and RefreshCRL notices the stale file.
func TestCRLNumberNeverRepeats(t *testing.T) {
	t.Parallel()
	clock := pkitest.NewClock(pkitest.Epoch)
	s := pkitest.NewStore(t, pki.WithClock(clock))
	seen := map[int64]bool{readCRLFile(t, s).Number.Int64(): true}
	max := int64(1)
	publish := func(step string) {
		t.Helper()
		n := readCRLFile(t, s).Number.Int64()
		if seen[n] || n <= max {
			t.Fatalf("%s: CRL number %d reused or not above %d", step, n, max)
		}
		seen[n], max = true, n
	}
	revoke := func(step string) {
		t.Helper()
		iss := pkitest.Issue(t, s, "c", pki.RoleAgent, time.Hour)
		if res, err := s.RevokeReport(iss.Serial, ""); err != nil || len(res.Warnings) != 0 {
			t.Fatalf("%s: revoke: %v %v", step, err, res.Warnings)
		}
		publish(step)
	}
	revoke("first revocation")
	old, err := os.ReadFile(s.Path(pki.CRLFile))
	if err != nil {
		t.Fatal(err)
	}
	revoke("second revocation")

	// Crash after the store write, before the CRL write: the file still
	// holds the previous CRL, the store the reserved number.
	if err := os.WriteFile(s.Path(pki.CRLFile), old, 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := s.RefreshCRL(false)
	if err != nil || !info.Regenerated {
		t.Fatalf("RefreshCRL after a crash: %+v %v; want a new CRL", info, err)
	}
	publish("refresh after crash")
	wantCRLMatchesStore(t, s, readCRLFile(t, s))

	// Crash again, then a revocation: it must not reuse the number the
	// crashed write reserved.
	if err := os.WriteFile(s.Path(pki.CRLFile), old, 0o644); err != nil {
		t.Fatal(err)
	}
	revoke("revocation after crash")

	// The CRL file lost: the store remembers.
	if err := os.Remove(s.Path(pki.CRLFile)); err != nil {
		t.Fatal(err)
	}
	revoke("revocation after the CRL was lost")

	// The store's number lost (an older nefia rewrote it): the file
	// remembers.
	data, err := os.ReadFile(s.Path(pki.RevokedFile))
	if err != nil {
		t.Fatal(err)
	}
	stripped := strings.Replace(string(data), `"crl_number":`, `"crl_number_was":`, 1)
	if stripped == string(data) {
		t.Fatalf("store has no crl_number:\n%.200s", data)
	}
	if err := os.WriteFile(s.Path(pki.RevokedFile), []byte(stripped), 0o600); err != nil {
		t.Fatal(err)
	}
	revoke("revocation after the store lost its number")
	if _, err := s.RefreshCRL(true); err != nil {
		t.Fatal(err)
	}
	publish("forced refresh")
}

// TestRefreshCRL: RefreshCRL regenerates exactly when the CRL is missing,
// damaged, foreign, incomplete or near its nextUpdate, or when forced.
func TestRefreshCRL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		force   bool
		damage  func(t *testing.T, s *pki.Store, clock *pkitest.Clock)
		regen   bool
		entries int
	}{
		{name: "current", regen: false, entries: 1},
		{name: "forced", force: true, regen: true, entries: 1},
		{name: "five days old", damage: func(_ *testing.T, _ *pki.Store, c *pkitest.Clock) { c.Advance(5 * 24 * time.Hour) }, regen: false, entries: 1},
		{name: "within a day of nextUpdate", damage: func(_ *testing.T, _ *pki.Store, c *pkitest.Clock) {
			c.Advance(pki.CRLValidity - pki.CRLRefreshMargin)
		}, regen: true, entries: 1},
		{name: "expired", damage: func(_ *testing.T, _ *pki.Store, c *pkitest.Clock) { c.Advance(30 * 24 * time.Hour) }, regen: true, entries: 1},
		{name: "clock went back before thisUpdate", damage: func(_ *testing.T, _ *pki.Store, c *pkitest.Clock) { c.Advance(-time.Hour) }, regen: true, entries: 1},
		{name: "missing", damage: func(t *testing.T, s *pki.Store, _ *pkitest.Clock) {
			if err := os.Remove(s.Path(pki.CRLFile)); err != nil {
				t.Fatal(err)
			}
		}, regen: true, entries: 1},
		{name: "garbage", damage: func(t *testing.T, s *pki.Store, _ *pkitest.Clock) {
			if err := os.WriteFile(s.Path(pki.CRLFile), []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, regen: true, entries: 1},
		{name: "signed by another CA", damage: func(t *testing.T, s *pki.Store, _ *pkitest.Clock) {
			other := pkitest.NewStore(t)
			data, err := os.ReadFile(other.Path(pki.CRLFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.Path(pki.CRLFile), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}, regen: true, entries: 1},
		{name: "a revocation whose CRL write failed", damage: func(t *testing.T, s *pki.Store, _ *pkitest.Clock) {
			// A directory where the CRL goes makes the atomic write fail.
			if err := os.Remove(s.Path(pki.CRLFile)); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(s.Path(pki.CRLFile), 0o700); err != nil {
				t.Fatal(err)
			}
			iss := pkitest.Issue(t, s, "second", pki.RoleAgent, time.Hour)
			res, err := s.RevokeReport(iss.Serial, "")
			if err != nil {
				t.Fatalf("a CRL write failure undid the revocation: %v", err)
			}
			if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], pki.CRLFile) || strings.Contains(res.Warnings[0], s.Dir()) {
				t.Fatalf("warnings %q: want one naming %s by base name", res.Warnings, pki.CRLFile)
			}
			if err := os.Remove(s.Path(pki.CRLFile)); err != nil {
				t.Fatal(err)
			}
		}, regen: true, entries: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := pkitest.NewClock(pkitest.Epoch)
			s := pkitest.NewStore(t, pki.WithClock(clock))
			iss := pkitest.Issue(t, s, "first", pki.RoleAgent, time.Hour)
			if _, err := s.Revoke(iss.Serial, ""); err != nil {
				t.Fatal(err)
			}
			before := readCRLFile(t, s).Number.Int64()
			if tt.damage != nil {
				tt.damage(t, s, clock)
			}
			info, err := s.RefreshCRL(tt.force)
			if err != nil {
				t.Fatal(err)
			}
			if info.Regenerated != tt.regen {
				t.Fatalf("Regenerated = %v, want %v", info.Regenerated, tt.regen)
			}
			crl := readCRLFile(t, s)
			if info.Number != crl.Number.Int64() || info.Entries != tt.entries || !info.NextUpdate.Equal(crl.NextUpdate) || !info.ThisUpdate.Equal(crl.ThisUpdate) {
				t.Errorf("info %+v does not describe the file (number %v, %d entries, next %v)", info, crl.Number, len(crl.RevokedCertificateEntries), crl.NextUpdate)
			}
			if tt.regen && info.Number <= before {
				t.Errorf("regenerated CRL number %d not above %d", info.Number, before)
			}
			if !tt.regen && info.Number != before {
				t.Errorf("unchanged CRL number moved from %d to %d", before, info.Number)
			}
			if !clock.Now().Before(crl.NextUpdate.Add(-pki.CRLRefreshMargin)) {
				t.Errorf("CRL after refresh is stale: nextUpdate %v, now %v", crl.NextUpdate, clock.Now())
			}
			wantCRLMatchesStore(t, s, crl)

			// CurrentCRL returns the DER of the file.
			der, cur, err := s.CurrentCRL()
			if err != nil || cur.Regenerated || cur.Number != info.Number {
				t.Fatalf("CurrentCRL: %+v %v", cur, err)
			}
			if !slices.Equal(der, crl.Raw) {
				t.Error("CurrentCRL's DER differs from the PEM file's")
			}
		})
	}
}

// TestCRLWithoutCA: a CRL needs the CA key; without a CA RefreshCRL says
// so with ErrNoCA.
func TestCRLWithoutCA(t *testing.T) {
	t.Parallel()
	s := pki.NewStore(t.TempDir())
	if _, err := s.RefreshCRL(false); !errors.Is(err, pki.ErrNoCA) {
		t.Fatalf("RefreshCRL without a CA: %v, want ErrNoCA", err)
	}
}
