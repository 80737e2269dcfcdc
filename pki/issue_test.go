package pki_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

func TestIssueClientCertificate(t *testing.T) {
	clock := pkitest.NewClock(pkitest.Epoch)
	s := pkitest.NewStore(t, pki.WithClock(clock))
	clock.Advance(time.Hour)
	iss := pkitest.Issue(t, s, "claude-agent", pki.RoleOperator, 24*time.Hour)

	cert, err := pki.ParseCertificatePEM(iss.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "claude-agent" || len(cert.Subject.OrganizationalUnit) != 1 || cert.Subject.OrganizationalUnit[0] != "operator" {
		t.Errorf("subject = %v", cert.Subject)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU = %v, want clientAuth only", cert.ExtKeyUsage)
	}
	now := clock.Now()
	if !cert.NotBefore.Equal(now.Add(-time.Minute)) || !cert.NotAfter.Equal(now.Add(24*time.Hour)) {
		t.Errorf("validity = %v .. %v, want %v .. %v", cert.NotBefore, cert.NotAfter, now.Add(-time.Minute), now.Add(24*time.Hour))
	}
	if cert.IsCA {
		t.Error("client certificate is a CA")
	}
	if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 || cert.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %x is not a positive 128-bit random number", cert.SerialNumber)
	}
	if iss.Serial != cert.SerialNumber.Text(16) || iss.Fingerprint != pki.Fingerprint(cert) {
		t.Errorf("issued record %+v does not describe the certificate", iss.IssuedCert)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(iss.CAPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	if block, _ := pem.Decode(iss.KeyPEM); block == nil || block.Type != "PRIVATE KEY" {
		t.Error("no PKCS#8 private key returned")
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].IssuedCert != iss.IssuedCert || list[0].State != pki.StateActive {
		t.Fatalf("inventory = %+v (%v)", list, err)
	}
	clock.Advance(25 * time.Hour)
	if list, _ := s.List(); list[0].State != pki.StateExpired {
		t.Errorf("state after expiry = %s", list[0].State)
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	badSig, _ := pkitest.CSR(t, pkix.Name{CommonName: "x"})
	block, _ := pem.Decode(badSig)
	block.Bytes[len(block.Bytes)-3] ^= 0xff // inside the signature
	badSig = pem.EncodeToMemory(block)

	tests := []struct {
		name string
		req  pki.IssueRequest
		want error
	}{
		{"empty name", pki.IssueRequest{Name: "", Duration: time.Hour}, pki.ErrInvalidName},
		{"dot dot slash", pki.IssueRequest{Name: "../x", Duration: time.Hour}, pki.ErrInvalidName},
		{"slash", pki.IssueRequest{Name: "a/b", Duration: time.Hour}, pki.ErrInvalidName},
		{"backslash", pki.IssueRequest{Name: `a\b`, Duration: time.Hour}, pki.ErrInvalidName},
		{"leading dot", pki.IssueRequest{Name: ".hidden", Duration: time.Hour}, pki.ErrInvalidName},
		{"leading dash", pki.IssueRequest{Name: "-rf", Duration: time.Hour}, pki.ErrInvalidName},
		{"65 chars", pki.IssueRequest{Name: strings.Repeat("a", 65), Duration: time.Hour}, pki.ErrInvalidName},
		{"space", pki.IssueRequest{Name: "a b", Duration: time.Hour}, pki.ErrInvalidName},
		{"NUL", pki.IssueRequest{Name: "a\x00b", Duration: time.Hour}, pki.ErrInvalidName},
		{"reserved ca", pki.IssueRequest{Name: "CA", Duration: time.Hour}, pki.ErrInvalidName},
		{"bad role", pki.IssueRequest{Name: "a", Role: "admin", Duration: time.Hour}, pki.ErrInvalidRole},
		{"zero duration", pki.IssueRequest{Name: "a"}, pki.ErrInvalidDuration},
		{"negative duration", pki.IssueRequest{Name: "a", Duration: -time.Hour}, pki.ErrInvalidDuration},
		{"beyond CA", pki.IssueRequest{Name: "a", Duration: pki.CAValidity + time.Hour}, pki.ErrInvalidDuration},
		{"CSR garbage", pki.IssueRequest{Name: "a", Duration: time.Hour, CSRPEM: []byte("not a csr")}, pki.ErrInvalidCSR},
		{"CSR bad signature", pki.IssueRequest{Name: "a", Duration: time.Hour, CSRPEM: badSig}, pki.ErrInvalidCSR},
		{"CSR is a certificate", pki.IssueRequest{Name: "a", Duration: time.Hour, CSRPEM: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}, pki.ErrInvalidCSR},
		{"CSR too large", pki.IssueRequest{Name: "a", Duration: time.Hour, CSRPEM: bytes.Repeat([]byte("A"), pki.MaxCSRBytes+1)}, pki.ErrInvalidCSR},
	}
	s := pkitest.NewStore(t)
	before, _ := os.ReadFile(s.Path(pki.IssuedFile))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Issue(tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	after, _ := os.ReadFile(s.Path(pki.IssuedFile))
	if !bytes.Equal(before, after) {
		t.Error("a refused issuance changed the inventory")
	}
	if err := pki.ValidateName("a.b_c-9"); err != nil {
		t.Errorf("valid name refused: %v", err)
	}
	if err := pki.ValidateName(strings.Repeat("a", 64)); err != nil {
		t.Errorf("64-char name refused: %v", err)
	}
}

func TestIssueBeyondCASaysWhenCAExpires(t *testing.T) {
	s := pkitest.NewStore(t)
	ca, _, _ := s.LoadCA()
	_, err := s.Issue(pki.IssueRequest{Name: "a", Duration: 20 * pki.CAValidity})
	if err == nil || !strings.Contains(err.Error(), ca.NotAfter.UTC().Format(time.RFC3339)) {
		t.Fatalf("err = %v, want it to name the CA expiry %s", err, ca.NotAfter.UTC().Format(time.RFC3339))
	}
}

func TestIssueFromCSRUsesOnlyThePublicKey(t *testing.T) {
	s := pkitest.NewStore(t)
	csr, key := pkitest.CSR(t, pkix.Name{CommonName: "evil", OrganizationalUnit: []string{"operator"}, Organization: []string{"root"}}, "gateway.example.com")
	iss, err := s.Issue(pki.IssueRequest{Name: "agent-1", Duration: time.Hour, CSRPEM: csr})
	if err != nil {
		t.Fatal(err)
	}
	if iss.KeyPEM != nil {
		t.Error("a key was returned for a CSR issuance")
	}
	cert, _ := pki.ParseCertificatePEM(iss.CertPEM)
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate does not certify the CSR's key")
	}
	if cert.Subject.CommonName != "agent-1" || cert.Subject.OrganizationalUnit[0] != "agent" || len(cert.Subject.Organization) != 0 {
		t.Errorf("CSR subject leaked into the certificate: %v", cert.Subject)
	}
	if len(cert.DNSNames) != 0 {
		t.Errorf("CSR's requested SANs leaked into the certificate: %v", cert.DNSNames)
	}
}

func TestWriteBundle(t *testing.T) {
	s := pkitest.NewStore(t)
	dir := filepath.Join(t.TempDir(), "out", "certs")
	iss := pkitest.Issue(t, s, "bot", pki.RoleAgent, time.Hour)
	p, err := pki.WriteBundle(dir, iss, false)
	if err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{p.Key: 0o600, p.Cert: 0o644, p.CA: 0o644, dir: 0o700} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v (%v), want %04o", path, fi.Mode().Perm(), err, mode)
		}
	}
	if err := pki.CheckBundle(dir, "bot", false); !errors.Is(err, pki.ErrFileExists) {
		t.Errorf("CheckBundle over an existing key = %v, want ErrFileExists", err)
	}
	again := pkitest.Issue(t, s, "bot", pki.RoleAgent, time.Hour)
	if _, err := pki.WriteBundle(dir, again, false); !errors.Is(err, pki.ErrFileExists) {
		t.Fatalf("overwrite without force = %v, want ErrFileExists", err)
	}
	if key, _ := os.ReadFile(p.Key); !bytes.Equal(key, iss.KeyPEM) {
		t.Fatal("refused overwrite changed the key")
	}
	if _, err := pki.WriteBundle(dir, again, true); err != nil {
		t.Fatal(err)
	}
	if key, _ := os.ReadFile(p.Key); !bytes.Equal(key, again.KeyPEM) {
		t.Fatal("forced overwrite did not replace the key")
	}
}

func TestCorruptInventoryIsAnErrorNamingTheFile(t *testing.T) {
	s := pkitest.NewStore(t)
	garbage := []byte(`{"version":1,"certificates":[{"serial":`)
	if err := os.WriteFile(s.Path(pki.IssuedFile), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]func() error{
		"issue": func() error { _, err := s.Issue(pki.IssueRequest{Name: "a", Duration: time.Hour}); return err },
		"list":  func() error { _, err := s.List(); return err },
	} {
		err := op()
		if !errors.Is(err, pki.ErrCorruptState) || !strings.Contains(err.Error(), s.Path(pki.IssuedFile)) {
			t.Errorf("%s: err = %v, want ErrCorruptState naming %s", name, err, pki.IssuedFile)
		}
	}
	// Revocation does not depend on the inventory (issue 10 item 5): it
	// works, and warns that the inventory cannot be read.
	res, err := s.RevokeReport("abcd", "")
	if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], pki.IssuedFile) {
		t.Errorf("revoke = %+v, %v; want success with a warning naming %s", res, err, pki.IssuedFile)
	}
	if data, _ := os.ReadFile(s.Path(pki.IssuedFile)); !bytes.Equal(data, garbage) {
		t.Error("corrupt inventory was rewritten")
	}
}

func TestConcurrentIssueLosesNothing(t *testing.T) {
	s := pkitest.NewStore(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Issue(pki.IssueRequest{Name: "c" + strings.Repeat("x", i%5), Duration: time.Hour})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if list, err := s.List(); err != nil || len(list) != n {
		t.Fatalf("inventory has %d entries (%v), want %d", len(list), err, n)
	}
}
