package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// Validity periods and clock-skew allowance.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so a peer whose clock runs a little
	// behind still accepts a certificate issued a moment ago.
	clockSkew = time.Minute
	// Backdate is clockSkew for other packages: how far a certificate's
	// NotBefore precedes its issuance, so that the bridge can tell the
	// lifetime a certificate was issued with from its validity window.
	Backdate = clockSkew
)

// InitOptions are the inputs of Init.
type InitOptions struct {
	// Hosts become the server certificate's SANs: IP addresses as IP SANs,
	// everything else as DNS names.
	Hosts []string
	// Force replaces an existing CA. The old files are moved to
	// archive/<time>/ in the state directory rather than deleted.
	Force bool
}

// InitResult describes what Init created.
type InitResult struct {
	CA     CertInfo `json:"ca"`
	Server CertInfo `json:"server"`
	// ArchivedTo is the directory the previous CA's files were moved to, if
	// Force replaced one.
	ArchivedTo string `json:"archived_to,omitempty"`
}

// CertInfo is the public description of a certificate.
type CertInfo struct {
	Subject     string    `json:"subject"`
	Serial      string    `json:"serial"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Fingerprint string    `json:"fingerprint"`
	SANs        []string  `json:"sans,omitempty"`
}

// DescribeCert returns the CertInfo of c.
func DescribeCert(c *x509.Certificate) CertInfo {
	info := CertInfo{
		Subject:     c.Subject.CommonName,
		Serial:      FormatSerial(c.SerialNumber),
		NotBefore:   c.NotBefore.UTC(),
		NotAfter:    c.NotAfter.UTC(),
		Fingerprint: Fingerprint(c),
	}
	info.SANs = append(info.SANs, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		info.SANs = append(info.SANs, ip.String())
	}
	return info
}

// stateFiles are the files one CA generation owns; Force archives them all.
var stateFiles = []string{CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, IssuedFile, RevokedFile, RevokedLogFile, CRLFile}

// Init creates the root CA, the server certificate, an empty inventory and an
// empty revocation store. Over an existing CA it refuses with ErrCAExists
// unless opts.Force is set: a new CA silently invalidates every certificate
// the old one issued.
func (s *Store) Init(opts InitOptions) (*InitResult, error) {
	dns, ips, err := parseHosts(opts.Hosts)
	if err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	var archived string
	if present, err := s.caPresent(); err != nil {
		return nil, err
	} else if present {
		if !opts.Force {
			return nil, s.describeExistingCA()
		}
		if s.records != nil {
			// Say first why the shared records cannot be used, when they
			// cannot (an unreadable configuration names its file).
			if h, ok := s.records.(healthReporter); ok {
				if err := h.Health(); err != nil {
					return nil, err
				}
			}
			return nil, ErrReplaceSharedCA
		}
		if archived, err = s.archive(); err != nil {
			return nil, err
		}
	}

	now := s.now()
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caCert, err := s.createCA(caKey, now)
	if err != nil {
		return nil, err
	}
	if archived == "" {
		// A first CA, so far in memory only: with shared records, it may
		// be made only for a new fleet, whose store records it as its CA.
		if err := s.checkNoFleet(Fingerprint(caCert)); err != nil {
			return nil, err
		}
	}
	srvKey, err := newKey()
	if err != nil {
		return nil, err
	}
	srvCert, err := createServerCert(caCert, caKey, srvKey, dns, ips, now)
	if err != nil {
		return nil, err
	}
	if err := s.writePair(CACertFile, caCert.Raw, CAKeyFile, caKey); err != nil {
		return nil, err
	}
	if err := s.writePair(ServerCertFile, srvCert.Raw, ServerKeyFile, srvKey); err != nil {
		return nil, err
	}
	// A new CA generation starts counting revocations at zero: its
	// inventory vouches that none were recorded yet.
	zero := 0
	if err := s.writeInventory(inventoryFile{Version: 1, Revocations: &zero}); err != nil {
		return nil, err
	}
	// The new CA publishes an empty CRL at once (issue 13 item 6), so a
	// terminator configured with it never lacks one; number 1 is
	// reserved in the store first, as every CRL number is.
	rf := revokedFile{Version: 1, CRLNumber: 1}
	if err := s.writeRevoked(rf); err != nil {
		return nil, err
	}
	if _, _, err := s.writeCRL(caCert, caKey, rf); err != nil {
		return nil, err
	}
	return &InitResult{CA: DescribeCert(caCert), Server: DescribeCert(srvCert), ArchivedTo: archived}, nil
}

func (s *Store) caPresent() (bool, error) {
	for _, name := range []string{CACertFile, CAKeyFile} {
		ok, err := exists(s.Path(name))
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// checkNoFleet lets Init create a CA on a host without one unless the
// inventory and revocations are shared records that already exist (a
// fleet with its own CA: ErrJoinSharedCA). Shared records that cannot
// say, or cannot be reached, refuse too: a new CA is not undone by
// learning later that a fleet was there. Absent shared records are
// created here (sharedCreator), before the CA: otherwise every host
// initialized before the first 'store migrate --to etcd' got a CA of its
// own, and all of them then issued into the one store.
func (s *Store) checkNoFleet(caFingerprint string) error {
	if s.records == nil {
		return nil
	}
	h, ok := s.records.(healthReporter)
	if !ok {
		return ErrJoinSharedCA
	}
	switch err := h.Health(); {
	case err == nil:
		return ErrJoinSharedCA
	case errors.Is(err, ErrSharedStoreAbsent):
		c, ok := s.records.(sharedCreator)
		if !ok {
			return nil
		}
		created, err := c.CreateShared(s.now(), caFingerprint)
		switch {
		case err != nil:
			return fmt.Errorf("pki: init could not create the shared store for a new fleet, so no CA was created: %w", err)
		case !created: // another host's init (or a migrate) created it meanwhile
			return ErrJoinSharedCA
		}
		return nil
	default:
		return fmt.Errorf("pki: init cannot tell whether the shared store already serves a fleet with its own CA, so no CA was created: %w", err)
	}
}

// describeExistingCA builds the refusal that tells the operator what a forced
// re-init would invalidate.
func (s *Store) describeExistingCA() error {
	detail := ""
	if c, err := readCert(s.Path(CACertFile)); err == nil {
		detail += fmt.Sprintf(" (%q, expires %s)", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if inv, err := s.readInventory(); err == nil {
		detail += fmt.Sprintf("; replacing it invalidates the server certificate and all %d client certificates it issued", len(inv.Certificates))
	} else {
		detail += "; replacing it invalidates the server certificate and every client certificate it issued"
	}
	return fmt.Errorf("%w in %s%s", ErrCAExists, s.dir, detail)
}

// archive moves the current generation's files to archive/<UTC time>/ so a
// forced re-init loses nothing an operator might still need.
func (s *Store) archive() (string, error) {
	dest := filepath.Join(s.dir, "archive", s.now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.MkdirAll(dest, dirMode); err != nil {
		return "", fmt.Errorf("pki: create archive dir %s: %w", dest, err)
	}
	for _, name := range stateFiles {
		err := os.Rename(s.Path(name), filepath.Join(dest, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("pki: archive %s: %w", s.Path(name), err)
		}
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return "", err
	}
	return dest, nil
}

func (s *Store) createCA(key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial prefix tells one nefia CA from another in error messages.
		Subject:               pkix.Name{CommonName: "nefia root CA " + FormatSerial(serial)[:8], Organization: []string{"nefia"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// MaxPathLen 0: this CA signs leaves only, never another CA.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		SubjectKeyId:   skid,
	}
	return sign(tmpl, tmpl, key.Public(), key)
}

func createServerCert(ca *x509.Certificate, caKey crypto.Signer, key crypto.Signer, dns []string, ips []net.IP, now time.Time) (*x509.Certificate, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	cn := "nefia gateway"
	if len(dns) > 0 {
		cn = dns[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"nefia"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              minTime(now.Add(ServerValidity), ca.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
		SubjectKeyId:          skid,
	}
	return sign(tmpl, ca, key.Public(), caKey)
}

// sign creates a certificate and parses it back, so callers always hold what
// was actually encoded.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new certificate: %w", err)
	}
	return c, nil
}

// writePair writes a key (0600) before its certificate (0644), so a crash in
// between leaves a key without a certificate, never a certificate whose key
// is missing.
func (s *Store) writePair(certName string, der []byte, keyName string, key crypto.Signer) error {
	pemKey, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.Path(keyName), pemKey, keyMode); err != nil {
		return err
	}
	return atomicfile.WriteFile(s.Path(certName), encodeCert(der), certMode)
}

// LoadCA returns the CA certificate and its key, checking that they match.
func (s *Store) LoadCA() (*x509.Certificate, crypto.Signer, error) {
	present, err := s.caPresent()
	if err != nil {
		return nil, nil, err
	}
	if !present {
		return nil, nil, fmt.Errorf("%w in %s", ErrNoCA, s.dir)
	}
	cert, err := readCert(s.Path(CACertFile))
	if err != nil {
		return nil, nil, err
	}
	key, err := readKey(s.Path(CAKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w (%s is missing)", ErrNoCAKey, s.Path(CAKeyFile))
	}
	if err != nil {
		return nil, nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, nil, fmt.Errorf("%w: %s does not match %s", ErrCorruptState, s.Path(CAKeyFile), s.Path(CACertFile))
	}
	return cert, key, nil
}

// CAFingerprint is the Fingerprint of the CA certificate in the state
// directory (ErrNoCA, wrapped, when there is none): what a shared store
// records as its fleet's CA.
func (s *Store) CAFingerprint() (string, error) {
	c, err := readCert(s.Path(CACertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w in %s", ErrNoCA, s.dir)
	}
	if err != nil {
		return "", err
	}
	return Fingerprint(c), nil
}

// CACertPEM returns the CA certificate file's contents, for client bundles.
func (s *Store) CACertPEM() ([]byte, error) {
	if _, err := readCert(s.Path(CACertFile)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s", ErrNoCA, s.dir)
		}
		return nil, err
	}
	data, err := os.ReadFile(s.Path(CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: read %s: %w", s.Path(CACertFile), err)
	}
	return data, nil
}

// parseHosts splits hosts into DNS names and IP addresses, rejecting anything
// that is neither.
func parseHosts(hosts []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, raw := range hosts {
		h := strings.TrimSpace(raw)
		if h == "" {
			continue
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if ip := net.ParseIP(h); ip != nil {
			// 0.0.0.0 and :: are where a server listens, never an address
			// a client connects to (issue 10 item 8).
			if ip.IsUnspecified() {
				return nil, nil, fmt.Errorf("%w: %q is the unspecified address; list the addresses clients connect to", ErrInvalidHost, raw)
			}
			if !seen[ip.String()] {
				seen[ip.String()] = true
				ips = append(ips, ip)
			}
			continue
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if endsInNumber(h) {
			return nil, nil, fmt.Errorf("%w: %q looks like an IP address but is not a valid one", ErrInvalidHost, raw)
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("%w: %q is neither an IP address nor a DNS name", ErrInvalidHost, raw)
		}
		if !seen[h] {
			seen[h] = true
			dns = append(dns, h)
		}
	}
	if len(dns)+len(ips) == 0 {
		return nil, nil, fmt.Errorf("%w: at least one host name or IP address is needed", ErrInvalidHost)
	}
	return dns, ips, nil
}

// endsInNumber reports whether a would-be DNS name ends in a numeric
// label, decimal or 0x-hex, as "256.1.1.1" or "10.0.0.0x1" do. Such names
// are malformed IP addresses (resolvers and URL parsers read some of them
// as addresses), and no top-level domain is numeric (RFC 3696 §2; the
// WHATWG URL standard's "ends in a number" rule).
func endsInNumber(h string) bool {
	last := h[strings.LastIndexByte(h, '.')+1:]
	if hex, ok := strings.CutPrefix(last, "0x"); ok {
		last = hex
		if last == "" {
			return true
		}
		return strings.Trim(last, "0123456789abcdef") == ""
	}
	return last != "" && strings.Trim(last, "0123456789") == ""
}

// validDNSName checks h, lowercased, against RFC 1123 host name syntax:
// labels of 1-63 letters, digits and inner hyphens, 253 characters in all.
// A leading "*" label is allowed with at least two labels after it, for a
// gateway behind a wildcard name; the certificate is trusted only by
// clients of this CA.
func validDNSName(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 2 {
			continue
		}
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
