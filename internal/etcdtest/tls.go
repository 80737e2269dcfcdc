package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles names PEM files as nefia's etcd settings take them
// (mcp.mtls.store.etcd.ca_file, cert_file, key_file), so a test can point
// a gateway's config at them.
type TLSFiles struct {
	// CAFile is the CA that signed the members' server certificates and
	// the client certificates they accept.
	CAFile string
	// CertFile and KeyFile are a client certificate the members accept.
	CertFile string
	KeyFile  string
}

// CA is the test CA of a TLS cluster. Tests sign further client
// certificates with it (another name, an expired one), or check that a
// certificate from another CA is refused.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	dir  string
}

// newCA makes a P-256 CA valid for a day and writes its certificate to
// dir/ca.pem. It does not use pki/pkitest on purpose: package pki's own
// tests may import etcdtest, and pkitest imports pki (an import cycle).
func newCA(t testing.TB, dir string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("etcdtest: generating the CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("etcdtest: signing the CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Cert: cert, Key: key, dir: dir}
	writePEM(t, ca.CAFile(), "CERTIFICATE", der)
	return ca
}

// CAFile is the path of the CA certificate (PEM).
func (ca *CA) CAFile() string { return filepath.Join(ca.dir, "ca.pem") }

// Leaf describes a certificate CA.Sign makes.
type Leaf struct {
	// CN is the subject common name; etcd's RBAC would use it as the user.
	CN string
	// EKU defaults to client authentication.
	EKU []x509.ExtKeyUsage
	// NotBefore and NotAfter default to a minute ago and an hour from now.
	NotBefore, NotAfter time.Time
	// IPAddresses are IP SANs, for server certificates.
	IPAddresses []net.IP
}

// Sign makes a P-256 certificate signed by the CA.
func (ca *CA) Sign(t testing.TB, l Leaf) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("etcdtest: generating a key: %v", err)
	}
	if l.EKU == nil {
		l.EKU = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Minute)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: l.CN},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  l.EKU,
		IPAddresses:  l.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatalf("etcdtest: signing %q: %v", l.CN, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// WritePair writes a certificate and its key as PEM files named
// name.pem and name-key.pem next to the CA, and returns them with the CA
// file as TLSFiles.
func (ca *CA) WritePair(t testing.TB, name string, c tls.Certificate) TLSFiles {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatalf("etcdtest: encoding the key of %s: %v", name, err)
	}
	f := TLSFiles{
		CAFile:   ca.CAFile(),
		CertFile: filepath.Join(ca.dir, name+".pem"),
		KeyFile:  filepath.Join(ca.dir, name+"-key.pem"),
	}
	writePEM(t, f.CertFile, "CERTIFICATE", c.Certificate[0])
	writePEM(t, f.KeyFile, "PRIVATE KEY", keyDER)
	return f
}

// Pool is a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}
