// Package pkitest holds the test helpers every nefia package uses to build
// real certificates: a settable clock, an initialized state directory, client
// certificates of any role and validity, and certificates from a foreign CA.
// Nothing here is for production use.
package pkitest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nefia/nefia/pki"
)

// Epoch is the fixed instant test clocks start at, so validity periods in
// tests are exact.
var Epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Clock is a pki.Clock tests move by hand. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// NewStore initializes a CA and server certificate (hosts localhost and
// 127.0.0.1) in a fresh temporary state directory.
func NewStore(t testing.TB, opts ...pki.Option) *pki.Store {
	t.Helper()
	// A subdirectory, so the state dir is created 0700 as in production
	// (t.TempDir itself is 0755).
	s := pki.NewStore(filepath.Join(t.TempDir(), "state"), opts...)
	if _, err := s.Init(pki.InitOptions{Hosts: []string{"localhost", "127.0.0.1", "::1"}}); err != nil {
		t.Fatalf("pkitest: init: %v", err)
	}
	return s
}

// Issue issues a client certificate from a generated key.
func Issue(t testing.TB, s *pki.Store, name string, role pki.Role, d time.Duration) *pki.Issued {
	t.Helper()
	iss, err := s.Issue(pki.IssueRequest{Name: name, Role: role, Duration: d})
	if err != nil {
		t.Fatalf("pkitest: issue %s: %v", name, err)
	}
	return iss
}

// KeyPair turns an issued bundle into a tls.Certificate for a client.
func KeyPair(t testing.TB, iss *pki.Issued) tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatalf("pkitest: key pair for %s: %v", iss.Name, err)
	}
	return kp
}

// CAPool returns a pool holding the store's CA, for clients verifying the
// gateway.
func CAPool(t testing.TB, s *pki.Store) *x509.CertPool {
	t.Helper()
	pool, err := pki.LoadCertPool(s.Path(pki.CACertFile))
	if err != nil {
		t.Fatalf("pkitest: %v", err)
	}
	return pool
}

// CSR returns a PEM certificate request for a new P-256 key, with the given
// subject and DNS names (requested extensions pki must ignore), and the key.
func CSR(t testing.TB, subject pkix.Name, dnsNames ...string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, DNSNames: dnsNames}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}

// Leaf describes a certificate ForeignCA or SelfSign should make.
type Leaf struct {
	CN string
	OU string
	// EKU is the extended key usage: nil means clientAuth, an empty slice
	// none at all (no extension).
	EKU       []x509.ExtKeyUsage
	NotBefore time.Time
	NotAfter  time.Time
	DNSNames  []string
	// IPAddresses are IP SANs, for server certificates.
	IPAddresses []net.IP
}

// ForeignCA is an unrelated CA: certificates it signs must never get in.
type ForeignCA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewForeignCA makes a P-256 CA valid for a day around now.
func NewForeignCA(t testing.TB) *ForeignCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "foreign test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return &ForeignCA{Cert: create(t, tmpl, tmpl, key, key), Key: key}
}

// Sign issues a leaf from the foreign CA.
func (ca *ForeignCA) Sign(t testing.TB, l Leaf) tls.Certificate {
	t.Helper()
	return SignLeaf(t, ca.Cert, ca.Key, l)
}

// SignLeaf issues an arbitrary leaf (any EKU, any validity) from a CA cert and
// key, for tests that need certificates pki refuses to make: expired,
// not-yet-valid, server-auth-only.
func SignLeaf(t testing.TB, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, l Leaf) tls.Certificate {
	t.Helper()
	key := newKey(t)
	serial, err := pki.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Minute)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(time.Hour)
	}
	if l.EKU == nil {
		l.EKU = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	subj := pkix.Name{CommonName: l.CN}
	if l.OU != "" {
		subj.OrganizationalUnit = []string{l.OU}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subj,
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  l.EKU,
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPAddresses,
	}
	cert := create(t, tmpl, caCert, key, caKey)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// LoadCA returns the store's CA certificate and ECDSA key.
func LoadCA(t testing.TB, s *pki.Store) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	cert, key, err := s.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("pkitest: CA key is %T", key)
	}
	return cert, ek
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func create(t testing.TB, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// EncodePair returns a key pair as PEM certificate and PKCS#8 key, as they
// would be written to disk.
func EncodePair(t testing.TB, kp tls.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(kp.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// CSRWithKey returns a PEM certificate request signed by key (any key type
// x509 supports), for tests of which keys a request may carry.
func CSRWithKey(t testing.TB, key crypto.Signer, subject pkix.Name) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// BadSignatureCSR returns a P-256 request whose subject was altered after
// signing: it parses, but its signature does not verify.
func BadSignatureCSR(t testing.TB) []byte {
	t.Helper()
	csr, _ := CSR(t, pkix.Name{CommonName: "signed-name"})
	b, _ := pem.Decode(csr)
	i := bytes.Index(b.Bytes, []byte("signed-name"))
	if i < 0 {
		t.Fatal("pkitest: subject not found in the CSR")
	}
	b.Bytes[i] = 'S'
	return pem.EncodeToMemory(b)
}
