package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// MaxCSRBytes bounds a CSR's PEM text; real ones are well under 2 KiB.
const MaxCSRBytes = 64 << 10

// IssueRequest asks for one client certificate.
type IssueRequest struct {
	// Name becomes the Subject CN and the bundle's file names.
	Name string
	// Role goes in the Subject OU; empty means RoleAgent.
	Role Role
	// Duration is the validity from now; it must be positive and end before
	// the CA does.
	Duration time.Duration
	// CSRPEM, when set, is a PEM certificate request whose public key is
	// certified; the private key never leaves the requester. Nothing else of
	// the CSR is used: not its subject, not its requested extensions.
	CSRPEM []byte
	// Renews, when set, is the serial this certificate renews; the
	// inventory records it.
	Renews string
}

// Issued is a freshly issued client certificate.
type Issued struct {
	IssuedCert
	CertPEM []byte
	// KeyPEM is the generated private key, nil when the request carried a
	// CSR. It is secret: never log it, never return it over MCP.
	KeyPEM []byte
	CAPEM  []byte
}

// Issue signs a client certificate and records it in the inventory. The
// certificate is usable only after the inventory write succeeded, so every
// certificate that exists can be listed and revoked.
func (s *Store) Issue(req IssueRequest) (*Issued, error) {
	if err := ValidateName(req.Name); err != nil {
		return nil, err
	}
	role, err := ParseRole(string(req.Role))
	if err != nil {
		return nil, err
	}
	if req.Duration <= 0 {
		return nil, fmt.Errorf("%w: %s must be positive", ErrInvalidDuration, req.Duration)
	}
	var pub crypto.PublicKey
	var key crypto.Signer
	if len(req.CSRPEM) > 0 {
		if pub, err = parseCSR(req.CSRPEM); err != nil {
			return nil, err
		}
	} else {
		k, err := newKey()
		if err != nil {
			return nil, err
		}
		key, pub = k, k.Public()
	}
	caCert, caKey, err := s.LoadCA()
	if err != nil {
		return nil, err
	}
	if c, ok := s.records.(caChecker); ok {
		if err := c.CheckCA(Fingerprint(caCert)); err != nil {
			return nil, err
		}
	}
	now := s.now()
	notAfter := now.Add(req.Duration)
	if notAfter.After(caCert.NotAfter) {
		return nil, fmt.Errorf("%w: %s would end %s, after the CA expires (%s)",
			ErrInvalidDuration, req.Duration, notAfter.UTC().Format(time.RFC3339), caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	skid, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	// A serial another issuer recorded first (shared records) is drawn
	// again: the certificate signed with it is discarded unseen.
	for attempt := 1; ; attempt++ {
		out, err := s.issueOnce(req, role, caCert, caKey, pub, key, skid, now, notAfter)
		if errors.Is(err, ErrSerialTaken) && attempt < 3 {
			continue
		}
		return out, err
	}
}

// issueOnce signs a certificate with a fresh serial and records it.
func (s *Store) issueOnce(req IssueRequest, role Role, caCert *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey,
	key crypto.Signer, skid []byte, now, notAfter time.Time) (*Issued, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.Name, OrganizationalUnit: []string{string(role)}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          skid,
	}
	cert, err := sign(tmpl, caCert, pub, caKey)
	if err != nil {
		return nil, err
	}
	out := &Issued{
		IssuedCert: IssuedCert{
			Serial:      FormatSerial(cert.SerialNumber),
			Name:        req.Name,
			Role:        role,
			NotBefore:   cert.NotBefore.UTC(),
			NotAfter:    cert.NotAfter.UTC(),
			Fingerprint: Fingerprint(cert),
			Renews:      req.Renews,
		},
		CertPEM: encodeCert(cert.Raw),
		CAPEM:   encodeCert(caCert.Raw),
	}
	if key != nil {
		if out.KeyPEM, err = encodeKey(key); err != nil {
			return nil, err
		}
	}
	if err := s.record(out.IssuedCert); err != nil {
		return nil, err
	}
	return out, nil
}

// record appends an entry to the inventory under the state lock, or adds
// it to the shared records.
func (s *Store) record(c IssuedCert) error {
	if s.records != nil {
		return s.records.AddIssued(c)
	}
	return s.recordFile(c)
}

// parseCSR returns the public key of a PEM CSR after checking its signature
// (proof that the requester holds the private key) and the key's strength.
func parseCSR(data []byte) (crypto.PublicKey, error) {
	if len(data) > MaxCSRBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCSR, MaxCSRBytes)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrInvalidCSR)
	}
	if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrInvalidCSR, b.Type)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature check failed: %v", ErrInvalidCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not accepted (use P-256 or P-384)", ErrInvalidCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits is too small (at least 2048)", ErrInvalidCSR, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrInvalidCSR, k)
	}
	return csr.PublicKey, nil
}

// CheckRenewalCSR accepts only what a renewal takes: a PEM CSR with a
// valid signature over an ECDSA P-256 key, nefia's own key type, so a
// renewed certificate is never weaker nor different in kind from the one
// nefia issued.
func CheckRenewalCSR(data []byte) error {
	pub, err := parseCSR(data)
	if err != nil {
		return err
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: a renewal takes an ECDSA P-256 key, not %s", ErrInvalidCSR, keyKind(pub))
	}
	if k.Curve != elliptic.P256() {
		return fmt.Errorf("%w: a renewal takes an ECDSA P-256 key, not curve %s", ErrInvalidCSR, k.Curve.Params().Name)
	}
	return nil
}

func keyKind(pub crypto.PublicKey) string {
	switch pub.(type) {
	case ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PublicKey:
		return "RSA"
	}
	return fmt.Sprintf("%T", pub)
}

// Lookup returns the inventory entry of a serial (any accepted spelling)
// with its current state; ok is false when the inventory does not know it.
func (s *Store) Lookup(serial string) (c ListedCert, ok bool, err error) {
	canon, err := ParseSerial(serial)
	if err != nil {
		return ListedCert{}, false, err
	}
	if s.records != nil {
		return s.lookupShared(canon)
	}
	list, err := s.List()
	if err != nil {
		return ListedCert{}, false, err
	}
	for _, c := range list {
		if c.Serial == canon {
			return c, true, nil
		}
	}
	return ListedCert{}, false, nil
}

// Now is the Store's clock: operations judge expiry by the same time the
// Store issues and lists with.
func (s *Store) Now() time.Time { return s.now() }
