package pki_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

// FuzzIssueCSR feeds arbitrary bytes to issuance as a CSR. Issue must not
// panic; it must refuse with ErrInvalidCSR anything whose first PEM block is
// not a certificate request with a valid signature (proof the requester holds
// the key); and what it accepts it must certify exactly: the CSR's public
// key, under the requested name and role, with nothing taken from the CSR's
// subject or requested extensions.
func FuzzIssueCSR(f *testing.F) {
	store := pkitest.NewStore(f)
	caCert, _, err := store.LoadCA()
	if err != nil {
		f.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	emptyInventory, err := os.ReadFile(store.Path(pki.IssuedFile))
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, csrPEM []byte) {
		iss, err := store.Issue(pki.IssueRequest{Name: "fuzz", Role: pki.RoleAgent, Duration: time.Hour, CSRPEM: csrPEM})
		csr, verifyErr := verifiedCSR(csrPEM)
		if err != nil {
			if len(csrPEM) == 0 {
				t.Fatalf("no CSR means a generated key, but Issue failed: %v", err)
			}
			if !errors.Is(err, pki.ErrInvalidCSR) {
				t.Fatalf("Issue = %v, not ErrInvalidCSR", err)
			}
			return
		}
		// Keep the inventory from growing over a long run.
		if err := os.WriteFile(store.Path(pki.IssuedFile), emptyInventory, 0o600); err != nil {
			t.Fatal(err)
		}
		if len(csrPEM) == 0 {
			return // a generated key: not this target's business
		}
		if verifyErr != nil {
			t.Fatalf("Issue accepted a CSR whose signature does not verify: %v", verifyErr)
		}
		if len(csrPEM) > pki.MaxCSRBytes {
			t.Fatalf("Issue accepted a %d-byte CSR", len(csrPEM))
		}
		if iss.KeyPEM != nil {
			t.Fatal("Issue generated a key for a CSR")
		}
		cert, err := pki.ParseCertificatePEM(iss.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cert.RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo) {
			t.Fatal("the certificate does not certify the CSR's key")
		}
		if cert.Subject.CommonName != "fuzz" || len(cert.Subject.OrganizationalUnit) != 1 || cert.Subject.OrganizationalUnit[0] != string(pki.RoleAgent) ||
			len(cert.Subject.Organization) != 0 || len(cert.DNSNames)+len(cert.EmailAddresses)+len(cert.IPAddresses)+len(cert.URIs) != 0 ||
			cert.IsCA || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(cert.UnknownExtKeyUsage) != 0 {
			t.Fatalf("the certificate took something from the CSR: subject %v, SANs %v %v %v %v, CA %v, EKU %v %v",
				cert.Subject, cert.DNSNames, cert.EmailAddresses, cert.IPAddresses, cert.URIs, cert.IsCA, cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("the certificate does not verify: %v", err)
		}
	})
}

// verifiedCSR is the independent reading of a CSR: its first PEM block must
// be a certificate request whose self-signature holds.
func verifiedCSR(data []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
		return nil, errors.New("not a certificate request: " + b.Type)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	return csr, csr.CheckSignature()
}
