// Package floor measures the public-key work a TLS 1.3 server must do for
// one full mutual-auth handshake with nefia's algorithms (ECDSA P-256
// certificates, X25519 key exchange), so the server CPU a real handshake
// costs can be judged against it ("at most 1.5x the crypto work"):
//
//   - one X25519 key generation and one X25519 shared secret (ECDHE);
//   - one ECDSA P-256 signature (the server's CertificateVerify);
//   - one ECDSA P-256 verification (the client's CertificateVerify);
//   - one chain verification: the CA's ECDSA P-256 signature on the client
//     certificate (one hash of its TBS bytes plus one verification).
//
// Nothing else is counted: not the HKDF key schedule, the record layer, the
// transcript hashes, parsing the client certificate or the syscalls. Those
// are what the ratio to this floor exposes. ExtraOps lists some of them for
// the report's explanation of the gap.
//
// The same operations run as go test benchmarks (floor_test.go) and, through
// Measure, inside nefia-bench, so the table quotes the floor measured in the
// same run as the handshakes.
package floor

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"runtime"
	"strings"
	"time"
)

// Op is one operation of the floor.
type Op struct {
	Name string
	Run  func() error
}

// Fixture is the key material the operations work on, generated once.
type Fixture struct {
	serverKey   *ecdsa.PrivateKey
	clientKey   *ecdsa.PrivateKey
	peerShare   *ecdh.PublicKey
	ca, client  *x509.Certificate
	clientDER   []byte
	signed      []byte // what a TLS 1.3 CertificateVerify signs (RFC 8446 4.4.3)
	clientSig   []byte // the client's CertificateVerify signature over signed
	ephemeral   *ecdh.PrivateKey
	certVerifyH [32]byte
}

// NewFixture generates a CA, a client certificate it signed, the server's
// key, the client's key share and a CertificateVerify signature.
func NewFixture() (*Fixture, error) {
	f := &Fixture{}
	var err error
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if f.serverKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if f.clientKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "floor CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if f.ca, err = x509.ParseCertificate(caDER); err != nil {
		return nil, err
	}
	clTmpl := &x509.Certificate{
		SerialNumber: new(big.Int).Lsh(big.NewInt(1), 127), Subject: pkix.Name{CommonName: "floor-client", OrganizationalUnit: []string{"agent"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if f.clientDER, err = x509.CreateCertificate(rand.Reader, clTmpl, f.ca, &f.clientKey.PublicKey, caKey); err != nil {
		return nil, err
	}
	if f.client, err = x509.ParseCertificate(f.clientDER); err != nil {
		return nil, err
	}
	peer, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	f.peerShare = peer.PublicKey()
	if f.ephemeral, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	// RFC 8446 4.4.3: 64 spaces, the context string, a zero byte and the
	// transcript hash.
	transcript := sha256.Sum256([]byte("transcript"))
	f.signed = append([]byte(strings.Repeat(" ", 64)+"TLS 1.3, client CertificateVerify\x00"), transcript[:]...)
	f.certVerifyH = sha256.Sum256(f.signed)
	if f.clientSig, err = ecdsa.SignASN1(rand.Reader, f.clientKey, f.certVerifyH[:]); err != nil {
		return nil, err
	}
	return f, nil
}

// Ops returns the floor's operations, and a last one, "handshake", that
// runs all of them in sequence: the floor of one full handshake.
func (f *Fixture) Ops() []Op {
	ops := []Op{
		{"x25519_keygen", func() error {
			_, err := ecdh.X25519().GenerateKey(rand.Reader)
			return err
		}},
		{"x25519_shared_secret", func() error {
			_, err := f.ephemeral.ECDH(f.peerShare)
			return err
		}},
		{"ecdsa_p256_sign", func() error {
			h := sha256.Sum256(f.signed)
			_, err := ecdsa.SignASN1(rand.Reader, f.serverKey, h[:])
			return err
		}},
		{"ecdsa_p256_verify_certverify", func() error {
			h := sha256.Sum256(f.signed)
			if !ecdsa.VerifyASN1(&f.clientKey.PublicKey, h[:], f.clientSig) {
				return fmt.Errorf("floor: CertificateVerify does not verify")
			}
			return nil
		}},
		{"chain_verify_1sig", func() error {
			return f.client.CheckSignatureFrom(f.ca)
		}},
	}
	all := append([]Op(nil), ops...)
	return append(all, Op{"handshake", func() error {
		for _, op := range ops {
			if err := op.Run(); err != nil {
				return err
			}
		}
		return nil
	}})
}

// ExtraOps are costs a real handshake has beyond the floor that are not
// public-key crypto, measured for the report's explanation of the gap.
func (f *Fixture) ExtraOps() []Op {
	return []Op{
		{"x509_parse_client_cert", func() error {
			_, err := x509.ParseCertificate(f.clientDER)
			return err
		}},
		{"x509_verify_chain_full", func() error {
			roots := x509.NewCertPool()
			roots.AddCert(f.ca)
			_, err := f.client.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			return err
		}},
	}
}

// Measure runs op for at least d of CPU time and returns the CPU time of
// one call: user plus system time of the calling thread (RUSAGE_THREAD),
// which other processes on a shared machine cannot inflate, as they inflate
// wall time. The goroutine is locked to its thread while it measures.
func Measure(op Op, d time.Duration) (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := op.Run(); err != nil { // warm up, and fail fast
		return 0, err
	}
	n := 1
	for {
		start, err := ThreadCPU()
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			if err := op.Run(); err != nil {
				return 0, err
			}
		}
		end, err := ThreadCPU()
		if err != nil {
			return 0, err
		}
		if el := end - start; el >= d || n >= 1<<24 {
			return el / time.Duration(n), nil
		}
		n *= 2
	}
}
