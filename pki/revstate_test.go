package pki_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// TestMissingRevocationStoreFailsClosed (issue 10 item 4): with
// mtls_revoked.json deleted after a revocation, the next revoke used to
// write a store holding only the new serial, and the first revoked
// certificate got back in. Now the writer refuses, naming the file, and
// leaves it missing; the checker refuses handshakes the same way.
func TestMissingRevocationStoreFailsClosed(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	a := pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)
	b := pkitest.Issue(t, s, "b", pki.RoleAgent, time.Hour)
	if _, err := s.Revoke(a.Serial, "lost"); err != nil {
		t.Fatal(err)
	}
	path := s.Path(pki.RevokedFile)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, err := s.Revoke(b.Serial, "")
	if !errors.Is(err, pki.ErrCorruptState) || !strings.Contains(err.Error(), path) {
		t.Fatalf("revoke with the store deleted = %v, want ErrCorruptState naming %s", err, path)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused revoke created %s (%v): A would be unrevoked", pki.RevokedFile, err)
	}
	c := pki.NewRevocationChecker(path)
	if err := c.Check(pkitest.KeyPair(t, a).Leaf); !errors.Is(err, pki.ErrRevocationUnavailable) || !strings.Contains(err.Error(), pki.RevokedFile) {
		t.Errorf("checker on the revoked cert = %v, want ErrRevocationUnavailable naming the file", err)
	}
	if err := c.Check(pkitest.KeyPair(t, b).Leaf); !errors.Is(err, pki.ErrRevocationUnavailable) {
		t.Errorf("checker on another cert = %v, want ErrRevocationUnavailable", err)
	}
	if _, err := s.List(); !errors.Is(err, pki.ErrCorruptState) {
		t.Errorf("list = %v, want ErrCorruptState", err)
	}
}

// TestMissingRevocationStoreMatrix walks the state matrix documented on
// checkMissingStore: for each state, Revoke and a fresh RevocationChecker
// must agree on whether a missing store may start empty.
func TestMissingRevocationStoreMatrix(t *testing.T) {
	t.Parallel()
	stripCount := regexp.MustCompile(`"revocations":\d+,`)
	tests := []struct {
		name string
		// setup damages a store holding one issued (and never revoked)
		// certificate, "a", whose serial it may revoke first.
		setup     func(t *testing.T, s *pki.Store, serial string)
		wantEmpty bool // the missing store may start empty
	}{
		{"never revoked", func(t *testing.T, s *pki.Store, _ string) {}, true},
		{"revoked before", func(t *testing.T, s *pki.Store, serial string) {
			if _, err := s.Revoke(serial, ""); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"older inventory listing certificates", func(t *testing.T, s *pki.Store, _ string) {
			rewrite(t, s.Path(pki.IssuedFile), func(b string) string { return stripCount.ReplaceAllString(b, "") })
		}, false},
		{"older inventory listing nothing", func(t *testing.T, s *pki.Store, _ string) {
			writeFile(t, s.Path(pki.IssuedFile), `{"version":1,"certificates":[]}`)
		}, true},
		{"inventory missing too", func(t *testing.T, s *pki.Store, _ string) {
			os.Remove(s.Path(pki.IssuedFile))
		}, false},
		{"inventory corrupt", func(t *testing.T, s *pki.Store, _ string) {
			writeFile(t, s.Path(pki.IssuedFile), "{not json")
		}, false},
		{"negative count", func(t *testing.T, s *pki.Store, _ string) {
			rewrite(t, s.Path(pki.IssuedFile), func(b string) string { return stripCount.ReplaceAllString(b, `"revocations":-1,`) })
		}, false},
		{"nothing at all", func(t *testing.T, s *pki.Store, _ string) {
			for _, f := range []string{pki.IssuedFile, pki.CACertFile, pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile} {
				os.Remove(s.Path(f))
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := pkitest.NewStore(t)
			a := pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)
			other := pkitest.Issue(t, s, "other", pki.RoleAgent, time.Hour)
			tt.setup(t, s, a.Serial)
			path := s.Path(pki.RevokedFile)
			os.Remove(path)

			checkErr := pki.NewRevocationChecker(path).Check(pkitest.KeyPair(t, other).Leaf)
			_, revokeErr := s.Revoke(other.Serial, "")
			if tt.wantEmpty {
				if checkErr != nil || revokeErr != nil {
					t.Fatalf("checker %v, revoke %v; want both to treat the store as empty", checkErr, revokeErr)
				}
				revs, err := s.Revocations()
				if err != nil || len(revs) != 1 || revs[0].Serial != other.Serial {
					t.Errorf("store after the first revoke = %+v, %v", revs, err)
				}
				return
			}
			if !errors.Is(checkErr, pki.ErrRevocationUnavailable) || !strings.Contains(checkErr.Error(), path) {
				t.Errorf("checker = %v, want ErrRevocationUnavailable naming %s", checkErr, path)
			}
			if !errors.Is(revokeErr, pki.ErrCorruptState) || !strings.Contains(revokeErr.Error(), path) {
				t.Errorf("revoke = %v, want ErrCorruptState naming %s", revokeErr, path)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused revoke created the store (%v)", err)
			}
		})
	}
}

// TestCheckerRemembersRevocations: once the checker has seen a store with
// revocations, that store going missing fails closed even if the
// inventory's count is reset as well.
func TestCheckerRemembersRevocations(t *testing.T) {
	t.Parallel()
	s := pkitest.NewStore(t)
	a := pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)
	if _, err := s.Revoke(a.Serial, ""); err != nil {
		t.Fatal(err)
	}
	c := pki.NewRevocationChecker(s.Path(pki.RevokedFile))
	if err := c.Check(pkitest.KeyPair(t, a).Leaf); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("check = %v, want ErrRevoked", err)
	}
	os.Remove(s.Path(pki.RevokedFile))
	rewrite(t, s.Path(pki.IssuedFile), func(b string) string {
		return regexp.MustCompile(`"revocations":\d+,`).ReplaceAllString(b, `"revocations":0,`)
	})
	if err := c.Check(pkitest.KeyPair(t, a).Leaf); !errors.Is(err, pki.ErrRevocationUnavailable) {
		t.Errorf("check after the store and count were reset = %v, want ErrRevocationUnavailable", err)
	}
}

// TestFreshStateDirRevokes: a state directory that never had a CA may start
// an empty store, and the first revoke there works.
func TestFreshStateDirRevokes(t *testing.T) {
	t.Parallel()
	s := pki.NewStore(filepath.Join(t.TempDir(), "state"))
	res, err := s.RevokeReport("0a:bc", "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Serial != "abc" || len(res.Warnings) != 1 {
		t.Errorf("revoke in a fresh dir = %+v", res)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func rewrite(t *testing.T, path string, edit func(string) string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := edit(string(data))
	if out == string(data) {
		t.Fatalf("edit of %s changed nothing", path)
	}
	writeFile(t, path, out)
}

// TestRevokeWithoutInventory (issue 10 item 5): with mtls_issued.json
// missing, a live certificate used to be unrevocable ("unknown serial").
// Any well-formed serial is revocable now; one the inventory does not know
// gets a warning, and the checker shuts it out.
func TestRevokeWithoutInventory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		damage   func(s *pki.Store)
		serial   func(live *pki.Issued) string
		wantName string
		wantWarn string // substring of the one warning; "" for none
	}{
		{"inventory missing", func(s *pki.Store) { os.Remove(s.Path(pki.IssuedFile)) },
			func(live *pki.Issued) string { return live.Serial }, "", "not in the inventory"},
		{"serial unknown to the inventory", func(s *pki.Store) {},
			func(*pki.Issued) string { return "ABCDEF" }, "", "not in the inventory"},
		{"known serial", func(s *pki.Store) {},
			func(live *pki.Issued) string { return live.Serial }, "live", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := pkitest.NewStore(t)
			live := pkitest.Issue(t, s, "live", pki.RoleAgent, time.Hour)
			tt.damage(s)
			serial, _ := pki.ParseSerial(tt.serial(live))
			res, err := s.RevokeReport(tt.serial(live), "gone")
			if err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if res.Serial != serial || res.Name != tt.wantName {
				t.Errorf("record = %+v, want serial %s name %q", res.Revocation, serial, tt.wantName)
			}
			switch {
			case tt.wantWarn == "" && len(res.Warnings) != 0:
				t.Errorf("warnings %q, want none", res.Warnings)
			case tt.wantWarn != "" && (len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], tt.wantWarn)):
				t.Errorf("warnings %q, want one saying %q", res.Warnings, tt.wantWarn)
			}
			if serial == live.Serial {
				err := pki.NewRevocationChecker(s.Path(pki.RevokedFile)).Check(pkitest.KeyPair(t, live).Leaf)
				if !errors.Is(err, pki.ErrRevoked) {
					t.Errorf("checker lets the revoked certificate in: %v", err)
				}
			}
			// The revocation is counted, so losing the store now fails closed.
			os.Remove(s.Path(pki.RevokedFile))
			if _, err := s.Revoke("1234", ""); !errors.Is(err, pki.ErrCorruptState) {
				t.Errorf("revoke after losing the store = %v, want ErrCorruptState", err)
			}
		})
	}
	if _, err := pkitest.NewStore(t).Revoke("xyz", ""); !errors.Is(err, pki.ErrInvalidSerial) {
		t.Errorf("malformed serial: %v, want ErrInvalidSerial", err)
	}
}
