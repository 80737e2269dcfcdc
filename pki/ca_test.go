package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

func TestInitWritesCAAndServerCert(t *testing.T) {
	clock := pkitest.NewClock(pkitest.Epoch)
	s := pki.NewStore(filepath.Join(t.TempDir(), "state"), pki.WithClock(clock))
	res, err := s.Init(pki.InitOptions{Hosts: []string{"localhost", "10.99.0.1", " Gateway.Example.COM. ", "[::1]", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	ca, _, err := s.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Errorf("CA basic constraints: IsCA=%v MaxPathLen=%d zero=%v", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero)
	}
	if ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA key usage = %v", ca.KeyUsage)
	}
	if len(ca.SubjectKeyId) == 0 {
		t.Error("CA has no subject key id")
	}
	if k, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	if got, want := ca.NotAfter.Sub(pkitest.Epoch), pki.CAValidity; got != want {
		t.Errorf("CA validity from now = %v, want %v", got, want)
	}
	if got := pkitest.Epoch.Sub(ca.NotBefore); got != time.Minute {
		t.Errorf("CA NotBefore backdated %v, want 1m", got)
	}

	data, err := os.ReadFile(s.Path(pki.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pki.ParseCertificatePEM(data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(srv.DNSNames, ","), "localhost,gateway.example.com"; got != want {
		t.Errorf("server DNS SANs = %q, want %q", got, want)
	}
	if len(srv.IPAddresses) != 2 || srv.IPAddresses[0].String() != "10.99.0.1" || srv.IPAddresses[1].String() != "::1" {
		t.Errorf("server IP SANs = %v", srv.IPAddresses)
	}
	if len(srv.ExtKeyUsage) != 1 || srv.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server EKU = %v, want serverAuth only", srv.ExtKeyUsage)
	}
	if !bytes.Equal(srv.AuthorityKeyId, ca.SubjectKeyId) {
		t.Error("server authority key id does not match the CA's subject key id")
	}
	if got := srv.NotAfter.Sub(pkitest.Epoch); got != pki.ServerValidity {
		t.Errorf("server validity = %v, want %v", got, pki.ServerValidity)
	}
	if res.CA.Fingerprint != pki.Fingerprint(ca) || len(res.Server.SANs) != 4 {
		t.Errorf("init result = %+v", res)
	}

	modes := map[string]os.FileMode{
		pki.CAKeyFile: 0o600, pki.ServerKeyFile: 0o600, pki.IssuedFile: 0o600, pki.RevokedFile: 0o600,
		pki.CACertFile: 0o644, pki.ServerCertFile: 0o644,
	}
	for name, want := range modes {
		fi, err := os.Stat(s.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode = %04o, want %04o", name, fi.Mode().Perm(), want)
		}
	}
	if fi, err := os.Stat(s.Dir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	if st := s.Status(); len(st.Problems) != 0 {
		t.Errorf("fresh state has problems: %v", st.Problems)
	}
}

func TestInitBadHosts(t *testing.T) {
	tests := []struct {
		name  string
		hosts []string
	}{
		{"none", nil},
		{"only blanks", []string{" ", ""}},
		{"underscore", []string{"bad_host"}},
		{"slash", []string{"a/b"}},
		{"leading dash", []string{"-x.example"}},
		{"url", []string{"https://x"}},
		// Issue 10 item 8.
		{"IPv4 out of range", []string{"256.1.1.1"}},
		{"three numeric labels", []string{"1.2.3"}},
		{"numeric last label", []string{"host.123"}},
		{"hex last label", []string{"10.0.0.0x1"}},
		{"leading zeros", []string{"010.001.001.001"}},
		{"unspecified IPv4", []string{"localhost", "0.0.0.0"}},
		{"unspecified IPv6", []string{"::"}},
		{"unspecified IPv6 bracketed", []string{"[::]"}},
		{"IPv4-mapped unspecified", []string{"::ffff:0.0.0.0"}},
		{"zone", []string{"fe80::1%eth0"}},
		{"wildcard over a TLD", []string{"*.com"}},
		{"inner wildcard", []string{"a.*.example.com"}},
		{"label of 64", []string{strings.Repeat("a", 64) + ".example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := pki.NewStore(t.TempDir())
			_, err := s.Init(pki.InitOptions{Hosts: tt.hosts})
			if !errors.Is(err, pki.ErrInvalidHost) {
				t.Fatalf("err = %v, want ErrInvalidHost", err)
			}
			if _, err := os.Stat(s.Path(pki.CACertFile)); !os.IsNotExist(err) {
				t.Errorf("CA written despite bad hosts: %v", err)
			}
		})
	}
}

func TestReinitRefusesWithoutForce(t *testing.T) {
	s := pkitest.NewStore(t)
	pkitest.Issue(t, s, "a", pki.RoleAgent, time.Hour)
	before, _ := os.ReadFile(s.Path(pki.CAKeyFile))

	_, err := s.Init(pki.InitOptions{Hosts: []string{"localhost"}})
	if !errors.Is(err, pki.ErrCAExists) {
		t.Fatalf("err = %v, want ErrCAExists", err)
	}
	if !strings.Contains(err.Error(), "all 1 client certificates") {
		t.Errorf("refusal does not say what would be lost: %v", err)
	}
	after, _ := os.ReadFile(s.Path(pki.CAKeyFile))
	if !bytes.Equal(before, after) {
		t.Fatal("CA key changed after a refused init")
	}

	res, err := s.Init(pki.InitOptions{Hosts: []string{"localhost"}, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	archived, err := os.ReadFile(filepath.Join(res.ArchivedTo, pki.CAKeyFile))
	if err != nil || !bytes.Equal(archived, before) {
		t.Fatalf("old CA key not archived (%v)", err)
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("new CA starts with inventory %v (%v), want empty", list, err)
	}
}

func TestLoadCADetectsProblems(t *testing.T) {
	tests := []struct {
		name   string
		mangle func(s *pki.Store)
		want   error
	}{
		{"no CA", func(s *pki.Store) { os.Remove(s.Path(pki.CACertFile)); os.Remove(s.Path(pki.CAKeyFile)) }, pki.ErrNoCA},
		{"garbage cert", func(s *pki.Store) { os.WriteFile(s.Path(pki.CACertFile), []byte("junk"), 0o644) }, pki.ErrCorruptState},
		{"garbage key", func(s *pki.Store) { os.WriteFile(s.Path(pki.CAKeyFile), []byte("junk"), 0o600) }, pki.ErrCorruptState},
		{"mismatched key", func(s *pki.Store) {
			data, _ := os.ReadFile(s.Path(pki.ServerKeyFile))
			os.WriteFile(s.Path(pki.CAKeyFile), data, 0o600)
		}, pki.ErrCorruptState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := pkitest.NewStore(t)
			tt.mangle(s)
			if _, _, err := s.LoadCA(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if st := s.Status(); len(st.Problems) == 0 {
				t.Error("status reports no problem")
			}
		})
	}
}

// TestInitWildcardHost: a leading wildcard with two labels after it is a
// valid server name (issue 10 item 8 keeps it).
func TestInitWildcardHost(t *testing.T) {
	t.Parallel()
	s := pki.NewStore(t.TempDir())
	res, err := s.Init(pki.InitOptions{Hosts: []string{"*.gw.example.com", "gw.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Server.SANs, ","); got != "*.gw.example.com,gw.example.com" {
		t.Errorf("SANs = %s", got)
	}
}
